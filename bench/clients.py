"""`bench/inference.py`'s clients, in a process of their own, as chatbot frontends are: streamed requests
against the embedded server (gRPC) or vLLM (OpenAI API). Either server's process then runs alone — vLLM
always did, in its own processes — and 16 client threads do not share the embedded server's GIL and cores
as they would inside its process.

Each request streams exactly N new tokens (greedy, ignore_eos). `run` returns, per request, (completion
tokens, time to first token, duration) and the wall time of the whole scenario, timed in the client process."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

TOPICS = ("fractions", "volcanoes", "photosynthesis", "the water cycle", "gravity", "the Roman Empire",
          "prime numbers", "magnets", "the moon", "rainbows", "atoms", "bees", "rivers", "clouds", "maps", "music")

Result = tuple[int, float, float]


def prompt(index: int) -> str:
    topic = TOPICS[index % len(TOPICS)]
    return f"<|im_start|>user\nTell me a long story about {topic}.<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class Target:
    """Where requests go: "grpc" (the embedded server's address) or "openai" (a base URL ending in /v1,
    with (adapter, model name) pairs: the base is adapter "")."""

    kind: str
    address: str
    models: tuple[tuple[str, str], ...] = ()


def _grpc_requester(address: str):
    from tutorforge.core.client import open_channel
    from tutorforge.v1 import inference_pb2 as pb
    from tutorforge.v1 import inference_pb2_grpc

    stub = inference_pb2_grpc.InferenceServiceStub(open_channel(address))

    def one(index: int, adapter: str, tokens: int) -> Result:
        request = pb.GenerateStreamRequest(
            prompt=prompt(index),
            model=pb.ModelSelection(adapter=adapter),
            parameters=pb.GenerationParameters(max_tokens=tokens, ignore_eos=True),
        )
        started = time.perf_counter()
        first, completion = 0.0, 0
        for event in stub.GenerateStream(request, timeout=3600):
            if event.WhichOneof("event") == "token":
                first = first or time.perf_counter() - started
            else:
                completion = event.summary.usage.completion_tokens
        return completion, first, time.perf_counter() - started

    return one


def _openai_requester(base_url: str, pairs: tuple[tuple[str, str], ...]):
    import openai

    models = dict(pairs)
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=3600)

    def one(index: int, adapter: str, tokens: int) -> Result:
        started = time.perf_counter()
        first, completion = 0.0, 0
        stream = client.completions.create(
            model=models[adapter], prompt=prompt(index), max_tokens=tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                first = first or time.perf_counter() - started
            if chunk.usage is not None:
                completion = chunk.usage.completion_tokens
        return completion, first, time.perf_counter() - started

    return one


_requesters: dict[Target, object] = {}


def _run(target: Target, requests: list[tuple[int, str]], tokens: int, concurrent: bool) -> tuple[list[Result], float]:
    """In the client process: one requester per target, kept across scenarios (its channel stays warm)."""
    if target not in _requesters:
        _requesters[target] = (
            _grpc_requester(target.address) if target.kind == "grpc" else _openai_requester(target.address, target.models)
        )
    one = _requesters[target]
    started = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(len(requests)) as pool:
            results = list(pool.map(lambda item: one(item[0], item[1], tokens), requests))
    else:
        results = [one(index, adapter, tokens) for index, adapter in requests]
    return results, time.perf_counter() - started


class ClientProcess:
    """One spawned process that runs the scenarios' requests (spawned: no copy of the server's threads)."""

    def __init__(self) -> None:
        self._pool = multiprocessing.get_context("spawn").Pool(1)

    def run(self, target: Target, requests: list[tuple[int, str]], tokens: int, concurrent: bool) -> tuple[list[Result], float]:
        return self._pool.apply(_run, (target, requests, tokens, concurrent))

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def __enter__(self) -> "ClientProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
