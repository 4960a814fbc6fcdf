"""Load benchmark: 64 concurrent tutor chat streams plus searches at a fixed rate against a real server,
while a probe (its own process and connection, as a kubelet's) checks health every 100 ms. Prints
throughput, p50/p99 latencies, error counts and the health latency distribution.

    python bench/load.py                       # starts `tutorforge serve inference retrieval` itself, 2 min
    python bench/load.py --duration 30         # shorter (a busy machine)
    python bench/load.py --address HOST:PORT   # against a running server (material already ingested)

A chat stream that is shed (RESOURCE_EXHAUSTED) waits the server's `retry-after-ms` hint and tries again;
sheds are counted apart from errors. Targets: no error other than sheds; every health check answered
within 100 ms. The machine may be shared: the load average is printed alongside."""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tutorforge.core.admission import RETRY_AFTER_KEY
from tutorforge.core.client import open_channel
from tutorforge.v1 import common_pb2, inference_pb2, inference_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
MATERIAL = REPO / "services" / "tutorforge" / "samples" / "material"
QUESTIONS = ("Why does a ball keep rolling?", "What is a fraction?", "Why do plants need light?",
             "What makes a rainbow?", "Why is the sea salty?", "How do magnets work?")
HEALTH_TARGET_MS = 100.0


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {"chat": [], "ttft": [], "search": [], "health": []}
        self.codes: Counter[tuple[str, str]] = Counter()
        self.tokens = 0

    def record(self, kind: str, code: str, seconds: float | None = None) -> None:
        with self.lock:
            self.codes[(kind, code)] += 1
            if seconds is not None and code == "OK":
                self.latencies[kind].append(seconds)


def chat_worker(channel: grpc.Channel, index: int, stop: threading.Event, recorder: Recorder, max_tokens: int) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = inference_pb2.ChatStreamRequest(
        messages=[common_pb2.ChatMessage(role="user", content=QUESTIONS[index % len(QUESTIONS)])],
        parameters=inference_pb2.GenerationParameters(max_tokens=max_tokens),
        retrieval=inference_pb2.RetrievalOptions(enabled=True),
    )
    while not stop.is_set():
        started = time.perf_counter()
        first = None
        tokens = 0
        call = stub.ChatStream(request, timeout=300)
        try:
            for event in call:
                if event.WhichOneof("event") == "token":
                    first = first or time.perf_counter() - started
                    tokens += 1
            recorder.record("chat", "OK", time.perf_counter() - started)
            if first is not None:
                recorder.record("ttft", "OK", first)
            with recorder.lock:
                recorder.tokens += tokens
        except grpc.RpcError as error:
            code = error.code().name
            recorder.record("chat", code)
            hint = dict(error.trailing_metadata() or ()).get(RETRY_AFTER_KEY)
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                stop.wait(int(hint or 500) / 1000)
            else:
                stop.wait(1.0)


def search_driver(channel: grpc.Channel, rate: float, stop: threading.Event, recorder: Recorder) -> None:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

    def one(question: str) -> None:
        started = time.perf_counter()
        try:
            stub.Search(retrieval_pb2.SearchRequest(query=question, limit=3), timeout=30)
            recorder.record("search", "OK", time.perf_counter() - started)
        except grpc.RpcError as error:
            recorder.record("search", error.code().name)

    # A fixed arrival rate (open loop): a slow server does not slow the arrivals down.
    with ThreadPoolExecutor(max_workers=32) as pool:
        next_at = time.perf_counter()
        count = 0
        while not stop.is_set():
            pool.submit(one, QUESTIONS[count % len(QUESTIONS)])
            count += 1
            next_at += 1 / rate
            stop.wait(max(0.0, next_at - time.perf_counter()))


def health_probe(address: str, stop: multiprocessing.synchronize.Event, results: multiprocessing.Queue) -> None:
    """A health Check every 100 ms, in a process and on a connection of its own, as a kubelet probe is: the
    64 chat callers of this process compete for its GIL and would otherwise be timed as the server's."""
    channel = open_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    outcomes = []
    while not stop.is_set():
        started = time.perf_counter()
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            outcomes.append(("OK", time.perf_counter() - started))
        except grpc.RpcError as error:
            outcomes.append((error.code().name, None))
        stop.wait(0.1)
    channel.close()
    results.put(outcomes)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start_server(port: int, store: Path, log: Path | None) -> subprocess.Popen:
    output = log.open("ab") if log else subprocess.DEVNULL
    server = subprocess.Popen(
        [sys.executable, "-m", "tutorforge", "serve", "inference", "retrieval", "--port", str(port), "--store", str(store)],
        stdout=output, stderr=output,
        # A fresh Qdrant folder beside the store; the converted model cache of the tests is reused.
        env={**os.environ, "TUTORFORGE_RETRIEVAL__EDGE_PATH": str(store.parent / "qdrant"),
             "TUTORFORGE_MODELS__CACHE_DIR": os.environ.get("TUTORFORGE_MODELS__CACHE_DIR", str(REPO / ".cache" / "models"))},
    )
    channel = open_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=120)
    channel.close()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="", help="A running server (default: start one on a free port).")
    parser.add_argument("--duration", type=float, default=120.0, help="Seconds of load (default 120).")
    parser.add_argument("--streams", type=int, default=64, help="Concurrent chat streams (default 64).")
    parser.add_argument("--search-rate", type=float, default=5.0, help="Searches per second (default 5).")
    parser.add_argument("--max-tokens", type=int, default=16, help="Tokens per chat reply (default 16).")
    parser.add_argument("--server-log", type=Path, help="Write the started server's log (JSON lines, one per call) here.")
    args = parser.parse_args()

    server = None
    address = args.address
    if not address:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        root = Path(tempfile.mkdtemp(prefix="tutorforge-load-"))
        server = start_server(port, root / "store", args.server_log)
        address = f"127.0.0.1:{port}"
        subprocess.run([sys.executable, "-m", "tutorforge", "ingest", str(MATERIAL), "--address", address],
                       check=True, stdout=subprocess.DEVNULL)
    channel = open_channel(address)
    # Warm the model up, so that its loading is not counted as load.
    inference_pb2_grpc.InferenceServiceStub(channel).Generate(
        inference_pb2.GenerateRequest(prompt="Hello", parameters=inference_pb2.GenerationParameters(max_tokens=1)), timeout=600
    )
    recorder = Recorder()
    stop = threading.Event()
    spawn = multiprocessing.get_context("spawn")
    probe_stop, probe_results = spawn.Event(), spawn.Queue()
    probe = spawn.Process(target=health_probe, args=(address, probe_stop, probe_results))
    threads = [threading.Thread(target=search_driver, args=(channel, args.search_rate, stop, recorder))]
    threads += [threading.Thread(target=chat_worker, args=(channel, i, stop, recorder, args.max_tokens)) for i in range(args.streams)]
    probe.start()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(args.duration)
    stop.set()
    probe_stop.set()
    # Rates are over the load window; calls still open at its end finish and count (the drain).
    elapsed = time.perf_counter() - started
    for code, seconds in probe_results.get(timeout=60):
        recorder.record("health", code, seconds)
    probe.join()
    for thread in threads:
        thread.join()
    channel.close()
    if server is not None:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)  # the scratch store and Qdrant folder
    report(recorder, elapsed, args)


def report(recorder: Recorder, elapsed: float, args: argparse.Namespace) -> None:
    print(f"load: {args.streams} chat streams ({args.max_tokens} tokens) + {args.search_rate:g} searches/s for {elapsed:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'call':8} {'ok':>6} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind in ("chat", "ttft", "search", "health"):
        values = recorder.latencies[kind]
        print(f"{kind:8} {len(values):6d} {len(values) / elapsed:7.2f} {percentile(values, 0.5) * 1000:8.0f} "
              f"{percentile(values, 0.99) * 1000:8.0f} {max(values, default=float('nan')) * 1000:8.0f}")
    print(f"chat tokens/s: {recorder.tokens / elapsed:.1f}")
    shed = sum(count for (kind, code), count in recorder.codes.items() if code == "RESOURCE_EXHAUSTED")
    errors = {f"{kind} {code}": count for (kind, code), count in recorder.codes.items()
              if code not in ("OK", "RESOURCE_EXHAUSTED")}
    health = recorder.latencies["health"]
    slow = sum(1 for value in health if value * 1000 > HEALTH_TARGET_MS)
    print(f"shed (RESOURCE_EXHAUSTED, retried after the hint): {shed}")
    print(f"errors other than shed: {sum(errors.values())} {errors if errors else ''}")
    print(f"health checks over {HEALTH_TARGET_MS:.0f} ms: {slow} of {len(health)}"
          f" (mean {statistics.fmean(health) * 1000 if health else float('nan'):.1f} ms)")
    print("health ms: " + ", ".join(f"p{share * 100:g} {percentile(health, share) * 1000:.0f}" for share in (0.5, 0.9, 0.99, 0.999))
          + f", max {max(health, default=float('nan')) * 1000:.0f}; over 50 ms: {sum(1 for v in health if v > 0.05)}")


if __name__ == "__main__":
    main()
