"""The tgi and openai engines against stand-in servers that speak TGI's and vLLM's HTTP protocols,
driven through real gRPC by the real client libraries (huggingface_hub.InferenceClient, openai)."""

from __future__ import annotations

import json
import socket

import grpc
import httpx
import jsonschema
import numpy as np
import openai
import pytest
from fake_servers import BASE_MODEL, FakeServer, Recorder, tgi_app, vllm_app
from inference_helpers import generate, stream_request
from safetensors.numpy import save_file

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.core.errors import Unavailable
from tutorforge.datasets.generation import TURN_SCHEMAS
from tutorforge.inference.remote import TgiEngine
from tutorforge.v1 import common_pb2, inference_pb2_grpc
from tutorforge.v1 import inference_pb2 as pb

# What dataset generation asks a teacher for: a tutor turn.
TURN_SCHEMA = TURN_SCHEMAS["reply"]


def _chat(
    adapter: str = "", max_tokens: int = 5, response_format: pb.ResponseFormat | None = None, **parameters: object
) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[common_pb2.ChatMessage(role="user", content="What is a volcano?")],
        model=pb.ModelSelection(adapter=adapter),
        parameters=pb.GenerationParameters(max_tokens=max_tokens, response_format=response_format, **parameters),
    )


def _json_schema(schema: dict | None = None) -> pb.ResponseFormat:
    return pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=json.dumps(schema or TURN_SCHEMA), name="turn")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _register_stub_adapter(running, folder, name: str = "pirate") -> None:
    """A minimal, valid LoRA folder (the remote server, not this process, would load its weights)."""
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]}))
    save_file(
        {"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((2, 4), np.float32),
         "base_model.model.layers.0.q_proj.lora_B.weight": np.zeros((4, 2), np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    AdapterRegistry(running.runtime.store).register(folder, name, BASE_MODEL)


@pytest.fixture(scope="module")
def tgi(module_serve, tmp_path_factory):
    recorder = Recorder()
    # A TGI started with --max-total-tokens 1024 (prompt + new tokens per request).
    with FakeServer(tgi_app(recorder, adapters={"pirate"}, max_total_tokens=1024)) as fake:
        running, channel = module_serve("inference", inference__engine="tgi", inference__engine_url=fake.url)
        _register_stub_adapter(running, tmp_path_factory.mktemp("adapter"))
        yield inference_pb2_grpc.InferenceServiceStub(channel), recorder


@pytest.fixture(scope="module")
def vllm(module_serve, tmp_path_factory):
    recorder = Recorder()
    with FakeServer(vllm_app(recorder)) as fake:
        running, channel = module_serve("inference", inference__engine="openai", inference__engine_url=fake.url)
        _register_stub_adapter(running, tmp_path_factory.mktemp("adapter"))
        yield inference_pb2_grpc.InferenceServiceStub(channel), recorder


def test_tgi_generate_sends_adapter_id(tgi):
    stub, recorder = tgi
    response = stub.Generate(generate("Tell me", adapter="pirate", max_tokens=4, seed=3))
    assert response.text == "Hello from pirate, what"
    sent = recorder.last("/")
    assert sent["inputs"] == "Tell me" and sent["stream"] is True
    assert sent["parameters"]["adapter_id"] == "pirate" and sent["parameters"]["details"] is True
    assert sent["parameters"]["max_new_tokens"] == 4 and sent["parameters"]["seed"] == 3
    # The stand-in counts the prompt's words as its tokens.
    assert response.summary.usage.completion_tokens == 4 and response.summary.usage.prompt_tokens == 2
    assert response.summary.finish_reason == pb.FINISH_REASON_LENGTH and response.summary.adapter == "pirate"


def test_tgi_stream_and_base_model(tgi):
    stub, recorder = tgi
    events = list(stub.GenerateStream(stream_request("Tell me", max_tokens=30)))
    assert [e.WhichOneof("event") for e in events][-1] == "summary"
    assert "".join(e.token.text for e in events[:-1]) == "Hello from base, what do you already know about it?"
    assert [e.token.token_id for e in events[:2]] == [100, 101]
    assert "adapter_id" not in recorder.last("/")["parameters"]
    assert events[-1].summary.finish_reason == pb.FINISH_REASON_STOP


def test_tgi_chat_names_the_adapter_as_model(tgi):
    stub, recorder = tgi
    assert stub.Chat(_chat("pirate")).message.content == "Hello from pirate, what do"
    sent = recorder.last("/v1/chat/completions")
    assert sent["model"] == "pirate" and sent["stream"] is True and sent["max_tokens"] == 5
    assert sent["messages"][0]["role"] == "system" and "Socratic" in sent["messages"][0]["content"]
    stub.Chat(_chat(""))
    assert recorder.last("/v1/chat/completions")["model"] == "tgi"


def test_tgi_greedy_is_deterministic_and_chat_asks_for_it_with_temperature_zero(tgi):
    stub, recorder = tgi
    first = stub.Generate(generate("Tell me", max_tokens=30)).text
    assert first == stub.Generate(generate("Tell me", max_tokens=30)).text == "Hello from base, what do you already know about it?"
    sent = recorder.last("/")["parameters"]
    assert sent["do_sample"] is False and sent.get("temperature") is None and sent.get("top_p") is None
    # TGI's Messages API samples when temperature is unset: greedy chat must send 0.
    assert stub.Chat(_chat(max_tokens=30)).message.content == first
    assert recorder.last("/v1/chat/completions")["temperature"] == 0.0


def test_tgi_sampling_follows_seed_and_temperature(tgi):
    stub, recorder = tgi

    def sampled(seed: int, temperature: float = 1.5) -> str:
        return stub.Generate(generate("Tell me", max_tokens=30, temperature=temperature, top_p=0.5, seed=seed)).text

    assert sampled(1) == sampled(1)
    assert len({sampled(seed) for seed in range(4)}) > 1
    sent = recorder.last("/")["parameters"]
    assert sent["do_sample"] is True and sent["temperature"] == 1.5 and sent["top_p"] == 0.5 and sent["seed"] == 3
    chat = stub.Chat(_chat(max_tokens=30, temperature=1.5, seed=5)).message.content
    assert chat == stub.Chat(_chat(max_tokens=30, temperature=1.5, seed=5)).message.content
    assert chat != "Hello from base, what do you already know about it?"


def test_tgi_stop_sequences_end_the_reply_before_them(tgi):
    stub, recorder = tgi
    response = stub.Generate(generate("Tell me", max_tokens=30, stop=["already"]))
    # TGI's own text keeps the stop sequence; tutorforge's reply ends before it, as OpenAI's do.
    assert response.text == "Hello from base, what do you "
    assert response.summary.finish_reason == pb.FINISH_REASON_STOP
    assert recorder.last("/")["parameters"]["stop"] == ["already"]
    events = list(stub.GenerateStream(stream_request("Tell me", max_tokens=30, stop=["you al"])))
    assert "".join(e.token.text for e in events[:-1]) == "Hello from base, what do "
    assert stub.Chat(_chat(max_tokens=30, stop=["know"])).message.content == "Hello from base, what do you already "


def test_tgi_refusals_come_back_as_invalid_argument_naming_the_field(tgi):
    stub, _ = tgi
    # Five stop strings pass tutorforge's own limit (8) but not TGI's default --max-stop-sequences (4).
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(generate("Tell me", max_tokens=5, stop=["a1", "a2", "a3", "a4", "a5"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`stop` supports up to 4 stop sequences" in caught.value.details()
    # More new tokens than the TGI server's --max-total-tokens leaves room for.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(generate("Tell me", max_tokens=2000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`inputs` tokens + `max_new_tokens` must be <= 1024" in caught.value.details()


def test_tgi_stand_in_refuses_what_tgi_refuses():
    """What makes the TGI tests above mean something: the stand-in validates as TGI's router does."""
    with FakeServer(tgi_app(Recorder(), adapters=set())) as server:
        for parameters, problem in (
            ({"temperature": 0.0}, "`temperature` must be strictly positive"),
            ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
            ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
            ({"top_k": 0}, "`top_k` must be strictly positive"),
            ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
            ({"max_new_tokens": 5000}, "`inputs` tokens + `max_new_tokens` must be <= 4096"),
            ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
            ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5"),
            ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
            ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
            ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
        ):
            answer = httpx.post(f"{server.url}/generate", json={"inputs": "x y", "parameters": parameters})
            assert answer.status_code == 422 and problem in answer.json()["error"], parameters
            assert answer.json()["error_type"] == "validation"
        messages = [{"role": "user", "content": "Hi"}]
        chat = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tgi", "messages": messages, "top_p": 1.0})
        assert chat.status_code == 422 and "`top_p`" in chat.text
        # The Messages API's presence_penalty becomes repetition_penalty presence_penalty + 2.
        for field, value, problem in (
            ("frequency_penalty", 3.0, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
            ("presence_penalty", -2.0, "`repetition_penalty` must be strictly positive"),
        ):
            chat = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "tgi", "messages": messages, field: value})
            assert chat.status_code == 422 and problem in chat.json()["error"], field
        empty = httpx.post(f"{server.url}/generate", json={"inputs": "", "parameters": {}})
        assert empty.status_code == 422 and "`inputs` cannot be empty" in empty.text


def test_tgi_takes_frequency_penalty_and_refuses_presence_penalty_up_front(tgi):
    stub, recorder = tgi
    plain = stub.Generate(generate("Tell me what you know", max_tokens=30)).text
    assert recorder.last("/")["parameters"].get("frequency_penalty") is None
    penalized = stub.Generate(generate("Tell me what you know", max_tokens=30, frequency_penalty=1.0)).text
    assert recorder.last("/")["parameters"]["frequency_penalty"] == 1.0
    # The stand-in honours it as TGI does (prompt tokens count): the reply no longer says "what you know".
    assert penalized != plain and " know" not in penalized
    chat = stub.Chat(_chat(max_tokens=30, frequency_penalty=1.0)).message.content
    assert recorder.last("/v1/chat/completions")["frequency_penalty"] == 1.0
    assert chat != stub.Chat(_chat(max_tokens=30)).message.content
    sent = len(recorder.requests)
    for call in (lambda: stub.Generate(generate("Tell me", max_tokens=5, presence_penalty=0.5)),
                 lambda: stub.Chat(_chat(presence_penalty=0.5))):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "presence_penalty is not available with the tgi engine" in caught.value.details()
    assert len(recorder.requests) == sent  # refused before reaching the server


def test_tgi_cannot_load_adapters_at_run_time(tgi):
    stub, _ = tgi
    with pytest.raises(grpc.RpcError) as caught:
        stub.LoadAdapter(pb.LoadAdapterRequest(name="pirate"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tutorforge adapters deploy pirate" in caught.value.details()
    listing = stub.ListAdapters(pb.ListAdaptersRequest())
    assert listing.engine == "tgi" and [a.name for a in listing.adapters] == ["pirate"]


def test_remote_engines_refuse_adapters_missing_from_the_registry(tgi, vllm):
    for stub, recorder in (tgi, vllm):
        sent = len(recorder.requests)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(generate("x", adapter="ghost", max_tokens=2))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(recorder.requests) == sent  # refused before reaching the server


def test_openai_engine_loads_through_the_lora_endpoints(vllm):
    stub, recorder = vllm
    loaded = stub.LoadAdapter(pb.LoadAdapterRequest(name="pirate")).adapter
    assert loaded.loaded and loaded.version == "v1"
    assert recorder.last("/v1/load_lora_adapter") == {"lora_name": "pirate", "lora_path": "/adapters/pirate/v1"}
    assert [a.name for a in stub.ListAdapters(pb.ListAdaptersRequest()).adapters if a.loaded] == ["pirate"]

    response = stub.Generate(generate("Tell me", adapter="pirate", max_tokens=3, temperature=0.5, seed=9))
    assert response.text == "Hello from pirate,"
    sent = recorder.last("/v1/completions")
    assert sent["model"] == "pirate" and sent["prompt"] == "Tell me" and sent["max_tokens"] == 3
    assert sent["seed"] == 9 and sent["temperature"] == 0.5 and sent["stream"] is True
    assert response.summary.usage.prompt_tokens == 7 and response.summary.finish_reason == pb.FINISH_REASON_LENGTH

    assert stub.Chat(_chat("pirate")).message.content == "Hello from pirate, what do"
    assert recorder.last("/v1/chat/completions")["model"] == "pirate"
    stub.Chat(_chat(""))
    assert recorder.last("/v1/chat/completions")["model"] == BASE_MODEL

    # Penalties go as OpenAI's fields when set, and not at all when 0.
    assert "frequency_penalty" not in sent and "presence_penalty" not in sent
    stub.Generate(generate("Tell me", max_tokens=3, frequency_penalty=1.5, presence_penalty=-0.5))
    sent = recorder.last("/v1/completions")
    assert sent["frequency_penalty"] == 1.5 and sent["presence_penalty"] == -0.5
    stub.Chat(_chat(frequency_penalty=0.5))
    sent = recorder.last("/v1/chat/completions")
    assert sent["frequency_penalty"] == 0.5 and "presence_penalty" not in sent

    stub.UnloadAdapter(pb.UnloadAdapterRequest(name="pirate"))
    assert recorder.last("/v1/unload_lora_adapter") == {"lora_name": "pirate"}
    # Registered but no longer loaded on the server (its /v1/models says so): refused before reaching it.
    sent = len(recorder.requests)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(generate("Tell me", adapter="pirate", max_tokens=3))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "not loaded" in caught.value.details()
    assert len(recorder.requests) == sent


def test_tgi_passes_the_schema_as_its_grammar_on_generate_and_chat(tgi):
    stub, recorder = tgi
    response = stub.Generate(generate("Tell me", max_tokens=40, response_format=_json_schema()))
    assert recorder.last("/")["parameters"]["grammar"] == {"type": "json", "value": TURN_SCHEMA}
    jsonschema.validate(json.loads(response.text), TURN_SCHEMA)

    reply = stub.Chat(_chat(max_tokens=40, response_format=_json_schema())).message.content
    # TGI's Messages API takes the same grammar form (it refuses OpenAI's json_schema form with 422).
    assert recorder.last("/v1/chat/completions")["response_format"] == {"type": "json", "value": TURN_SCHEMA}
    jsonschema.validate(json.loads(reply), TURN_SCHEMA)


def test_tgi_refuses_what_it_cannot_constrain(tgi):
    stub, recorder = tgi
    sent = len(recorder.requests)
    # No "any JSON object" mode in TGI: refused here, before anything is sent.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(_chat(response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "response_format" in caught.value.details() and "json_schema" in caught.value.details()
    assert len(recorder.requests) == sent
    # A schema without top-level properties reaches TGI, whose 422 comes back as INVALID_ARGUMENT.
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(generate("Tell me", max_tokens=5, response_format=_json_schema({"type": "array"})))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Grammar must have a 'properties' field" in caught.value.details()


def test_openai_engine_passes_response_format_on_chat_and_completions(vllm):
    stub, recorder = vllm
    expected = {"type": "json_schema", "json_schema": {"name": "turn", "schema": TURN_SCHEMA, "strict": True}}
    reply = stub.Chat(_chat(max_tokens=40, response_format=_json_schema())).message.content
    assert recorder.last("/v1/chat/completions")["response_format"] == expected
    jsonschema.validate(json.loads(reply), TURN_SCHEMA)

    # The openai client's completions API has no response_format: it goes in the body, where vLLM reads it.
    response = stub.Generate(generate("Tell me", max_tokens=40, response_format=_json_schema()))
    assert recorder.last("/v1/completions")["response_format"] == expected
    jsonschema.validate(json.loads(response.text), TURN_SCHEMA)

    reply = stub.Chat(_chat(max_tokens=40, response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)))
    assert recorder.last("/v1/chat/completions")["response_format"] == {"type": "json_object"}
    assert isinstance(json.loads(reply.message.content), dict)
    stub.Chat(_chat())
    assert "response_format" not in recorder.last("/v1/chat/completions")


def test_stand_ins_refuse_the_shapes_the_real_servers_refuse():
    """What makes the pass-through tests above mean something: the stand-ins check response formats as
    TGI's router (serde + validation, 422) and vLLM's request model (400) do."""
    openai_form = {"type": "json_schema", "json_schema": {"name": "turn", "schema": TURN_SCHEMA}}
    messages = [{"role": "user", "content": "Hi"}]
    with FakeServer(tgi_app(Recorder(), adapters=set())) as tgi_server:
        chat = httpx.post(f"{tgi_server.url}/v1/chat/completions", json={"model": "tgi", "messages": messages,
                                                                         "response_format": openai_form})
        assert chat.status_code == 422 and "missing field `value`" in chat.text
        for grammar, problem in (({"type": "xml", "value": "<a/>"}, "unknown variant `xml`"),
                                 ({"type": "json", "value": {"type": "object"}}, "'properties' field"),
                                 ({"type": "json", "value": "{not json"}, "grammar is not valid"),
                                 ({"type": "json", "value": {"type": 5, "properties": {}}}, "grammar is not valid")):
            answer = httpx.post(f"{tgi_server.url}/generate", json={"inputs": "x", "parameters": {"grammar": grammar}})
            assert answer.status_code == 422 and problem in answer.text, grammar
        accepted = {"type": "json_schema", "value": {"name": "turn", "schema": TURN_SCHEMA}}
        answer = httpx.post(f"{tgi_server.url}/generate", json={"inputs": "x", "parameters": {"grammar": accepted,
                                                                                               "max_new_tokens": 40}})
        jsonschema.validate(json.loads(answer.json()["generated_text"]), TURN_SCHEMA)
    with FakeServer(vllm_app(Recorder())) as vllm_server:
        for response_format, problem in (({"type": "json", "value": TURN_SCHEMA}, "Input should be"),
                                         ({"type": "json_schema", "json_schema": {"schema": TURN_SCHEMA}}, "name"),
                                         ({"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": 5}}},
                                          "json_schema.schema")):
            for path, body in (("/v1/chat/completions", {"messages": messages}), ("/v1/completions", {"prompt": "x"})):
                answer = httpx.post(f"{vllm_server.url}{path}", json={"model": BASE_MODEL, **body,
                                                                      "response_format": response_format})
                assert answer.status_code == 400 and problem in answer.json()["message"], (path, response_format)


def test_tgi_probe_reads_the_health_route(settings):
    settings.inference.engine = "tgi"
    with FakeServer(tgi_app(Recorder(), adapters=set())) as fake:
        settings.inference.engine_url = fake.url
        TgiEngine(settings).probe()
    settings.inference.engine_url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(Unavailable, match="unreachable"):
        TgiEngine(settings).probe()


def test_tgi_door_refuses_logprobs_naming_them(module_serve):
    """The tgi engine reports no logprobs: the door says so before anything is sent to TGI."""
    recorder = Recorder()
    port = _free_port()
    with FakeServer(tgi_app(recorder, adapters=set())) as fake:
        module_serve("inference", inference__engine="tgi", inference__engine_url=fake.url, server__http_port=port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        sent = len(recorder.requests)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, logprobs=True,
                extra_body={"retrieval": False},
            )
    assert "logprobs are not available with the tgi engine" in caught.value.message
    assert len(recorder.requests) == sent
