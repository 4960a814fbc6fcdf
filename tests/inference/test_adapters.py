"""Many LoRA adapters on one base: registry listing, load/unload at run time, base-model checks, and
mixed batches whose rows each match their own unbatched greedy output."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from inference_helpers import ADAPTERS, PROMPT, generate
from safetensors.numpy import save_file

from tests.conftest import MODEL_CACHE
from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.client.connection import Connection
from tutorforge.client.inference import InferenceClient
from tutorforge.core.models import DEFAULT_CHAT_MODEL_NAME
from tutorforge.core.settings import Settings
from tutorforge.inference.embedded import EmbeddedEngine
from tutorforge.inference.types import GenerationRequest, SamplingParams
from tutorforge.v1 import inference_pb2 as pb
from tutorforge.v1 import inference_pb2_grpc

COMPARED_TOKENS = 16


@pytest.fixture(scope="module")
def server(module_serve, tiny_adapters):
    running, channel = module_serve("inference", inference__threads=1)
    registry = AdapterRegistry(running.runtime.store)
    for name, folder in tiny_adapters.items():
        registry.register(folder, name, DEFAULT_CHAT_MODEL_NAME, metadata={"subject": name, "grade_level": "7"})
    registry.register(tiny_adapters["pirate"], "alien", "some-other-base-model")
    return running, inference_pb2_grpc.InferenceServiceStub(channel)


def _tokens(stub, adapter: str) -> list[int]:
    events = stub.GenerateStream(
        pb.GenerateStreamRequest(
            prompt=PROMPT,
            model=pb.ModelSelection(adapter=adapter),
            parameters=pb.GenerationParameters(max_tokens=COMPARED_TOKENS, ignore_eos=True),
        )
    )
    return [e.token.token_id for e in events if e.WhichOneof("event") == "token"]


def test_list_shows_registered_adapters_with_metadata(server):
    _, stub = server
    listing = stub.ListAdapters(pb.ListAdaptersRequest())
    assert listing.base_model == DEFAULT_CHAT_MODEL_NAME and listing.engine == "embedded"
    adapters = {a.name: a for a in listing.adapters}
    assert {"pirate", "french", "alien"} <= adapters.keys()
    pirate = adapters["pirate"]
    assert pirate.registered and pirate.version == "v1" and pirate.rank == ADAPTERS["pirate"][0]
    assert sorted(pirate.target_modules) == sorted(ADAPTERS["pirate"][1])
    assert pirate.metadata["subject"] == "pirate" and "adapter_model.safetensors" in pirate.files
    assert adapters["french"].rank == ADAPTERS["french"][0]


def test_adapters_are_listed_by_name_in_keyset_pages(server):
    running, stub = server
    names = [a.name for a in stub.ListAdapters(pb.ListAdaptersRequest()).adapters]
    assert names == sorted(names) and len(names) >= 3
    paged, token = [], ""
    while True:
        page = stub.ListAdapters(pb.ListAdaptersRequest(page_size=2, page_token=token))
        assert len(page.adapters) <= 2 and page.base_model == DEFAULT_CHAT_MODEL_NAME
        paged += [a.name for a in page.adapters]
        token = page.next_page_token
        if not token:
            break
    assert paged == names
    # The SDK follows the pages into one listing.
    with Connection(running.address) as connection:
        assert [a.name for a in InferenceClient(connection).adapters(page_size=1).adapters] == names
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListAdapters(pb.ListAdaptersRequest(page_token="Not A Name!"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in refused.value.details()


def test_load_and_unload_at_run_time(server):
    _, stub = server
    loaded = stub.LoadAdapter(pb.LoadAdapterRequest(name="french")).adapter
    assert loaded.loaded and loaded.version == "v1"
    assert {a.name for a in stub.ListAdapters(pb.ListAdaptersRequest()).adapters if a.loaded} >= {"french"}
    unloaded = stub.UnloadAdapter(pb.UnloadAdapterRequest(name="french")).adapter
    assert not unloaded.loaded and unloaded.registered
    assert "french" not in {a.name for a in stub.ListAdapters(pb.ListAdaptersRequest()).adapters if a.loaded}
    with pytest.raises(grpc.RpcError) as again:
        stub.UnloadAdapter(pb.UnloadAdapterRequest(name="french"))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("name", "code"),
    [("../x", grpc.StatusCode.INVALID_ARGUMENT), ("ghost", grpc.StatusCode.NOT_FOUND), ("alien", grpc.StatusCode.FAILED_PRECONDITION)],
)
def test_load_refuses_bad_unknown_and_foreign_adapters(server, name, code):
    _, stub = server
    with pytest.raises(grpc.RpcError) as caught:
        stub.LoadAdapter(pb.LoadAdapterRequest(name=name))
    assert caught.value.code() == code


def test_weights_that_do_not_fit_the_base_are_refused_before_loading(server, tmp_path):
    running, stub = server
    folder = tmp_path / "misfit"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]}))
    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((2, 4), np.float32),
         "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((4, 2), np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    AdapterRegistry(running.runtime.store).register(folder, "misfit", DEFAULT_CHAT_MODEL_NAME)
    before = stub.Generate(generate(max_tokens=6)).text
    with pytest.raises(grpc.RpcError) as caught:
        stub.LoadAdapter(pb.LoadAdapterRequest(name="misfit"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "does not fit" in caught.value.details()
    assert stub.Generate(generate(max_tokens=6)).text == before  # nothing half-loaded


def test_adapter_for_another_base_fails_unless_fallback(server):
    _, stub = server
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(generate(adapter="alien", max_tokens=4))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "some-other-base-model" in caught.value.details()
    response = stub.Generate(generate(adapter="alien", fallback=True, max_tokens=4))
    assert response.summary.fell_back_to_base and response.summary.adapter == ""


def test_concurrent_requests_over_base_and_two_adapters(server):
    """Each adapter changes the answer, and concurrent (batched) rows match their sequential outputs."""
    _, stub = server
    names = ["", "pirate", "french"]
    sequential = {name: _tokens(stub, name) for name in names}
    assert len({tuple(tokens) for tokens in sequential.values()}) == 3, sequential
    with ThreadPoolExecutor(len(names) * 2) as pool:
        concurrent = list(pool.map(lambda name: (name, _tokens(stub, name)), names * 2))
    for name, tokens in concurrent:
        assert tokens == sequential[name], name
    summary = stub.Generate(generate(adapter="pirate", max_tokens=2)).summary
    assert summary.adapter == "pirate" and not summary.fell_back_to_base


@pytest.mark.slow
def test_one_mixed_batch_matches_unbatched_rows(tiny_adapters):
    """Domain level, so that the rows provably share one batch: the engine is paused while they queue.

    float32, so that left padding (prompts of different lengths) cannot flip a near-tie through bf16
    round-off; the served bf16 path is compared on equal-length rows above."""
    settings = Settings()
    settings.models.cache_dir = MODEL_CACHE
    settings.models.dtype = "float32"
    settings.inference.threads = 1
    engine = EmbeddedEngine(settings)
    try:
        for name, folder in tiny_adapters.items():
            engine.load_adapter(name, folder)
        params = SamplingParams(max_tokens=COMPARED_TOKENS, ignore_eos=True)
        prompts = [PROMPT, "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"]
        rows = [(prompt, adapter) for prompt in prompts for adapter in ("", "pirate", "french")]

        def run(prompt: str, adapter: str):
            stream = engine.submit(GenerationRequest(params=params, prompt=prompt, adapter=adapter))
            return [e.token_id for e in stream if hasattr(e, "token_id")]

        alone = {row: run(*row) for row in rows}
        with engine.paused():
            streams = {row: engine.submit(GenerationRequest(params=params, prompt=row[0], adapter=row[1])) for row in rows}
        batched = {row: [e.token_id for e in stream if hasattr(e, "token_id")] for row, stream in streams.items()}
        for row in rows:
            assert batched[row] == alone[row], row
        assert alone[(PROMPT, "pirate")] != alone[(PROMPT, "french")] != alone[(PROMPT, "")]
        engine.unload_adapter("pirate")
        engine.unload_adapter("french")
        assert run(PROMPT, "") == alone[(PROMPT, "")]
    finally:
        engine.close()
