"""Structured output: JSON-schema constrained decoding in the embedded engine with the real model, over
real gRPC and the OpenAI-compatible HTTP door (the official openai client), in a mixed continuous batch
with adapters, and the refusal of schemas that cannot be enforced."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import grpc
import jsonschema
import openai
import pytest
from inference_helpers import PROMPT, generate

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.core.models import DEFAULT_CHAT_MODEL_NAME
from tutorforge.v1 import common_pb2, inference_pb2_grpc
from tutorforge.v1 import inference_pb2 as pb

QUESTION_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 5, "maxLength": 120}},
    "required": ["question"],
    "additionalProperties": False,
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "sure": {"type": "boolean"}},
    "required": ["city", "sure"],
    "additionalProperties": False,
}


def _json_schema(schema: dict, name: str = "reply") -> pb.ResponseFormat:
    return pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=json.dumps(schema), name=name)


@pytest.fixture(scope="module")
def server(module_serve, tiny_adapters):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running, channel = module_serve("inference", inference__threads=1, server__http_port=port)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    for name, folder in tiny_adapters.items():
        AdapterRegistry(running.runtime.store).register(folder, name, DEFAULT_CHAT_MODEL_NAME)
        stub.LoadAdapter(pb.LoadAdapterRequest(name=name))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
    return stub, client


def test_generate_follows_the_schema(server):
    stub, _ = server
    response = stub.Generate(generate(max_tokens=40, response_format=_json_schema(ANSWER_SCHEMA)))
    document = json.loads(response.text)
    jsonschema.validate(document, ANSWER_SCHEMA)
    # The reply ends with the document, not at max_tokens.
    assert response.summary.finish_reason == pb.FINISH_REASON_STOP
    assert response.summary.usage.completion_tokens < 40


def test_json_object_gives_an_object(server):
    stub, _ = server
    request = generate(max_tokens=48, response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT))
    response = stub.Generate(request)
    if response.summary.finish_reason == pb.FINISH_REASON_STOP:
        assert isinstance(json.loads(response.text), dict)
    else:  # out of tokens mid-document: still a prefix of an object
        assert response.text.startswith("{")


def test_constrained_and_free_rows_share_a_batch_with_adapters(server):
    """Per-row grammar state: constrained rows on the base and on two adapters run in one batch with a
    free-text row; each constrained reply is valid, the free one is unconstrained."""
    stub, _ = server
    constrained = {adapter: generate(adapter=adapter, max_tokens=40, response_format=_json_schema(ANSWER_SCHEMA))
                   for adapter in ("", "pirate", "french")}
    free = generate(max_tokens=12)
    with ThreadPoolExecutor(4) as pool:
        futures = {adapter: pool.submit(stub.Generate, request) for adapter, request in constrained.items()}
        free_reply = pool.submit(stub.Generate, free).result()
    for adapter, future in futures.items():
        response = future.result()
        jsonschema.validate(json.loads(response.text), ANSWER_SCHEMA)
        assert response.summary.adapter == adapter
    assert not free_reply.text.lstrip().startswith("{")


def test_chat_stream_follows_the_schema(server):
    stub, _ = server
    request = pb.ChatStreamRequest(
        messages=[common_pb2.ChatMessage(role="system", content="You write questions that students ask."),
                  common_pb2.ChatMessage(role="user", content="Write one question a student asks about volcanoes.")],
        parameters=pb.GenerationParameters(max_tokens=60, response_format=_json_schema(QUESTION_SCHEMA)),
    )
    events = list(stub.ChatStream(request))
    text = "".join(e.token.text for e in events if e.WhichOneof("event") == "token")
    jsonschema.validate(json.loads(text), QUESTION_SCHEMA)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        (pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema="{not json"), "not valid JSON"),
        (pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA), "schema is missing"),
        (_json_schema({"type": "objekt"}), "objekt"),
        (_json_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}), "missing"),
        (pb.ResponseFormat(type=7), "response_format.type"),
    ],
)
def test_bad_response_format_is_refused(server, response_format, expected):
    stub, _ = server
    with pytest.raises(grpc.RpcError) as error:
        stub.Generate(generate(prompt=PROMPT, max_tokens=8, response_format=response_format))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "response_format" in error.value.details() and expected in error.value.details()


def test_openai_client_json_schema(server):
    _, client = server
    reply = client.chat.completions.create(
        model="base",
        messages=[{"role": "system", "content": "You write questions that students ask."},
                  {"role": "user", "content": "Write one question a student asks about fractions."}],
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "question", "schema": QUESTION_SCHEMA, "strict": True}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), QUESTION_SCHEMA)
    assert reply.choices[0].finish_reason == "stop"
    # A JSON reply skips the tutor's retrieval unless asked for: nothing but the document comes back.
    assert reply.model_extra["citations"] == []


def test_openai_client_json_object_streams(server):
    _, client = server
    chunks = client.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": "Give the capital of France as JSON with the key city."}],
        max_tokens=40,
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(json.loads(text), dict)


def test_openai_client_bad_schema(server):
    _, client = server
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}},
        )
    assert "response_format" in str(error.value)
    with pytest.raises(openai.BadRequestError, match="response_format.json_schema is missing"):
        client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
            response_format={"type": "json_schema"},  # type: ignore[typeddict-item]
        )
