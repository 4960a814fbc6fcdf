"""What chatbot frontends rely on in the OpenAI-compatible door, checked with the official openai client
against a real server (embedded engine, real model): structured replies, stop, n choices, usage in
streams, logprobs, and clear refusals of what the door does not do (function calling).
The same fields against a real vLLM behind the door: tests/inference/test_vllm_real.py."""

from __future__ import annotations

import json
import socket

import jsonschema
import openai
import pytest
from tutorforge.inference.openai_compat import MAX_CHOICES

QUESTION = [{"role": "user", "content": "Name a planet of the solar system."}]
NO_RETRIEVAL = {"retrieval": False}


@pytest.fixture(scope="module")
def client(module_serve):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    module_serve("inference", inference__threads=1, server__http_port=port)
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)


def _ask(client: openai.OpenAI, **fields: object):
    return client.chat.completions.create(model="base", messages=QUESTION, extra_body=NO_RETRIEVAL, **fields)


def test_json_schema_and_json_object_replies_are_enforced(client):
    schema = {"type": "object", "properties": {"planet": {"type": "string", "maxLength": 20}}, "required": ["planet"]}
    reply = _ask(client, max_tokens=30, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    reply = _ask(client, max_tokens=30, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_stop_ends_the_reply_before_the_stop_string(client):
    free = _ask(client, max_tokens=12).choices[0].message.content
    word = free.split()[1]
    stopped = _ask(client, max_tokens=12, stop=[word])
    assert stopped.choices[0].message.content == free[: free.index(word)]
    assert stopped.choices[0].finish_reason == "stop"


def test_n_choices_whole_and_streamed_with_usage(client):
    reply = _ask(client, max_tokens=6, n=3, temperature=1.0, seed=11)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content for c in reply.choices)
    assert reply.usage.completion_tokens >= 3
    # Seeded: the same request gives the same choices, and choice i is seed + i, so they differ.
    again = _ask(client, max_tokens=6, n=3, temperature=1.0, seed=11)
    assert [c.message.content for c in again.choices] == [c.message.content for c in reply.choices]
    assert len({c.message.content for c in reply.choices}) > 1

    texts: dict[int, str] = {0: "", 1: ""}
    usage = None
    for chunk in _ask(client, max_tokens=6, n=2, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    whole = _ask(client, max_tokens=6, n=2)
    assert texts == {0: whole.choices[0].message.content, 1: whole.choices[1].message.content}
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens > 0
    assert usage.prompt_tokens == whole.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"n": MAX_CHOICES + 1}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"frequency_penalty": 3}, "frequency_penalty 3 is out of range: use -2..2"),
        ({"presence_penalty": -2.5}, "presence_penalty -2.5 is out of range: use -2..2"),
    ],
)
def test_what_the_door_does_not_do_is_refused_naming_the_field(client, fields, named):
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, max_tokens=4, **fields)
    assert caught.value.status_code == 400 and named in caught.value.message


def test_frequency_and_presence_penalties_reach_the_engine(client):
    def reply(**fields: object) -> str:
        return client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "List some animals."}], extra_body=NO_RETRIEVAL,
            max_tokens=32, **fields,
        ).choices[0].message.content

    plain = reply()
    assert reply(frequency_penalty=0, presence_penalty=0) == plain
    assert reply(frequency_penalty=1.5) != plain
    assert reply(presence_penalty=2) != plain


def test_logprobs_and_top_logprobs_whole_and_streamed(client):
    reply = _ask(client, max_tokens=6, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens > 0
    assert "".join(item.token for item in content) == reply.choices[0].message.content
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        values = [top.logprob for top in item.top_logprobs]
        assert values == sorted(values, reverse=True) and all(value <= 0 for value in values)
        # Greedy: the chosen token is the most likely one.
        assert item.top_logprobs[0].token == item.token
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob)
    # Without top_logprobs: the chosen tokens only; streamed: the same tokens and values, chunk by chunk.
    plain = _ask(client, max_tokens=6, logprobs=True).choices[0].logprobs.content
    assert [(i.token, i.top_logprobs) for i in plain] == [(i.token, []) for i in content]
    streamed = []
    for chunk in _ask(client, max_tokens=6, logprobs=True, top_logprobs=3, stream=True):
        for choice in chunk.choices:
            streamed += choice.logprobs.content if choice.logprobs else []
    assert [(i.token, round(i.logprob, 4)) for i in streamed] == [(i.token, round(i.logprob, 4)) for i in content]
    # Not asked for: none reported.
    assert _ask(client, max_tokens=2).choices[0].logprobs is None
