"""Generate / GenerateStream with the real model through real gRPC: basics, streaming order, stop
strings, max tokens, seeds, and bad inputs."""

from __future__ import annotations

import grpc
import pytest
from inference_helpers import generate, stream_request

from tutorforge.v1 import inference_pb2 as pb
from tutorforge.v1 import inference_pb2_grpc


@pytest.fixture(scope="module")
def stub(module_serve) -> inference_pb2_grpc.InferenceServiceStub:
    _, channel = module_serve("inference", inference__threads=1)
    return inference_pb2_grpc.InferenceServiceStub(channel)


def test_generate_answers_the_prompt(stub):
    response = stub.Generate(generate(max_tokens=12))
    assert response.text.strip()
    assert "Paris" in response.text
    usage = response.summary.usage
    assert 0 < usage.completion_tokens <= 12
    assert usage.prompt_tokens > 5 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.summary.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert response.summary.adapter == "" and not response.summary.fell_back_to_base
    assert 0 < response.summary.time_to_first_token_seconds <= response.summary.duration_seconds


def test_stream_sends_tokens_then_one_summary(stub):
    events = list(stub.GenerateStream(stream_request(max_tokens=10)))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "summary" and kinds.count("summary") == 1
    assert set(kinds[:-1]) == {"token"}
    summary = events[-1].summary
    # One event per generated token (the end token itself is not text).
    assert len(events) - 1 == summary.usage.completion_tokens
    streamed = "".join(event.token.text for event in events[:-1])
    # Greedy decoding is deterministic: the stream spells out exactly what the unary call returns.
    assert streamed == stub.Generate(generate(max_tokens=10)).text


def test_model_stops_at_the_end_token(stub):
    response = stub.Generate(generate(max_tokens=200))
    assert response.summary.finish_reason == pb.FINISH_REASON_STOP
    assert response.summary.usage.completion_tokens < 200
    assert "<|im_end|>" not in response.text


def test_max_tokens_is_honoured(stub):
    response = stub.Generate(generate(max_tokens=5, ignore_eos=True))
    assert response.summary.usage.completion_tokens == 5
    assert response.summary.finish_reason == pb.FINISH_REASON_LENGTH


def test_stop_string_cuts_the_text(stub):
    full = stub.Generate(generate(max_tokens=16, ignore_eos=True)).text
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    cut = stub.Generate(generate(max_tokens=16, ignore_eos=True, stop=[stop]))
    assert cut.text == full[: full.index(stop)]
    assert cut.summary.finish_reason == pb.FINISH_REASON_STOP
    streamed = "".join(e.token.text for e in stub.GenerateStream(stream_request(max_tokens=16, ignore_eos=True, stop=[stop])))
    assert streamed == cut.text


def test_sampling_with_a_seed_is_reproducible(stub):
    prompt = "Once upon a time"

    def sample(seed: int) -> str:
        return stub.Generate(generate(prompt, max_tokens=12, temperature=1.2, top_p=0.95, seed=seed, ignore_eos=True)).text

    first = sample(7)
    assert sample(7) == first
    assert len({first, sample(8), sample(9)}) > 1


# Greedy SmolLM2 loops on this prompt ("- cat\n- dog\n- cat\n..." to the end).
LOOP = "List of animals:\n- cat\n- dog\n-"


def _repeated_4grams(tokens: list[int]) -> int:
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return len(grams) - len(set(grams))


def test_frequency_and_presence_penalties_break_a_greedy_loop(stub):
    def tokens(**parameters: float) -> list[int]:
        events = list(stub.GenerateStream(stream_request(LOOP, max_tokens=32, ignore_eos=True, **parameters)))
        return [event.token.token_id for event in events[:-1]]

    plain = tokens()
    assert _repeated_4grams(plain) > 10
    # A presence penalty is the same for the second repeat as for the tenth: this loop takes the full 2.
    for penalty in ({"frequency_penalty": 1.5}, {"presence_penalty": 2.0}):
        penalized = tokens(**penalty)
        assert penalized != plain and _repeated_4grams(penalized) < _repeated_4grams(plain) // 2, penalty
    # Penalties of 0 are no penalty; a negative one favours the loop, which stays.
    assert tokens(frequency_penalty=0.0, presence_penalty=0.0) == plain
    assert _repeated_4grams(tokens(frequency_penalty=-0.5)) >= _repeated_4grams(plain)


def test_greedy_with_seed_is_reproducible(stub):
    texts = {stub.Generate(generate("Once upon a time", max_tokens=12, seed=s, ignore_eos=True)).text for s in (1, 2)}
    assert len(texts) == 1


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (generate(prompt=""), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
        (generate(prompt="   "), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
        (generate(max_tokens=10**6), grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
        (generate(max_tokens=-1), grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
        (generate(top_p=1.5), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (generate(temperature=-1), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (generate(stop=[""]), grpc.StatusCode.INVALID_ARGUMENT, "stop"),
        (generate(frequency_penalty=3), grpc.StatusCode.INVALID_ARGUMENT, "frequency_penalty 3 is out of range: use -2..2"),
        (generate(presence_penalty=-2.5), grpc.StatusCode.INVALID_ARGUMENT, "presence_penalty -2.5 is out of range"),
        (generate(frequency_penalty=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "frequency_penalty is nan"),
        (generate(presence_penalty=float("inf")), grpc.StatusCode.INVALID_ARGUMENT, "presence_penalty is inf"),
        (generate(adapter="../x"), grpc.StatusCode.INVALID_ARGUMENT, "adapter name"),
        (generate(adapter="a/b"), grpc.StatusCode.INVALID_ARGUMENT, "adapter name"),
        (generate(adapter="no-such-adapter"), grpc.StatusCode.NOT_FOUND, "not in the registry"),
    ],
)
def test_bad_inputs_get_clear_statuses(stub, request_, code, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request_)
    assert caught.value.code() == code
    assert fragment in caught.value.details()
    with pytest.raises(grpc.RpcError) as streamed:
        list(stub.GenerateStream(pb.GenerateStreamRequest(prompt=request_.prompt, model=request_.model, parameters=request_.parameters)))
    assert streamed.value.code() == code


def test_prompt_longer_than_the_context_is_refused(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(generate(prompt="word " * 9000, max_tokens=8))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context" in caught.value.details()


def test_fallback_to_base_is_explicit_and_reported(stub):
    response = stub.Generate(generate(adapter="no-such-adapter", fallback=True, max_tokens=6))
    assert response.summary.fell_back_to_base and response.summary.adapter == ""
    assert response.text == stub.Generate(generate(max_tokens=6)).text
