"""The embedded engine's fast path against plain transformers/peft: greedy tokens identical to
`generate` (base and adapter), prefix-cache hits and chunked prefill change nothing, the start-up
dtype/threads choice is reported, and int8 weights serve the base and adapters (a bfloat16 cache read by
the native kernel; greedy tokens through an int8 screen of the float head)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from inference_helpers import PROMPT
from tooling import missing_tool
from tutorforge.inference import tuning
from tutorforge.inference.embedded import EmbeddedEngine
from tutorforge.inference.types import GenerationRequest, SamplingParams, TokenEvent

from tests.conftest import make_settings

TOKENS = 16
# Longer than two prefix blocks, so a second request sharing it hits the prefix cache.
SYSTEM = (
    "<|im_start|>system\nYou are a patient Socratic tutor for school students. Never give the answer away: "
    "ask one short guiding question at a time, build on what the student already knows, and cite the course "
    "material with its tags when you use it.<|im_end|>\n"
)
QUESTIONS = ("Why does ice float on water?", "What makes the sky blue?")


def _chat(question: str) -> str:
    return f"{SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _engine(tmp_path: Path, **changes: object) -> EmbeddedEngine:
    settings = make_settings(tmp_path, models__dtype="float32", inference__threads=1, **changes)
    engine = EmbeddedEngine(settings)
    engine.start()
    return engine


def _run(engine: EmbeddedEngine, prompt: str, adapter: str = "", tokens: int = TOKENS) -> list[int]:
    stream = engine.submit(GenerationRequest(params=SamplingParams(max_tokens=tokens), prompt=prompt, adapter=adapter))
    return [event.token_id for event in stream if isinstance(event, TokenEvent)]


def _generate(model, tokenizer, prompt: str, tokens: int = TOKENS) -> list[int]:
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**ids, max_new_tokens=tokens, do_sample=False)[0, ids["input_ids"].shape[1] :].tolist()
    # The engine streams no event for the end token.
    return [token for token in output if token not in (0, 2)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_adapters):
    engine = _engine(tmp_path_factory.mktemp("engine"))
    for name, folder in tiny_adapters.items():
        engine.load_adapter(name, folder)
    yield engine
    engine.close()


@pytest.mark.slow
def test_greedy_tokens_match_transformers_and_peft(engine, tiny_adapters):
    import torch
    from peft import PeftModel
    from tutorforge.core.models import load_chat_model

    model = load_chat_model(engine._settings.models, dtype=torch.float32).eval()
    prompts = [PROMPT, _chat(QUESTIONS[0])]
    for prompt in prompts:
        assert _run(engine, prompt) == _generate(model, engine.tokenizer, prompt)
    peft = PeftModel.from_pretrained(model, str(tiny_adapters["pirate"]), adapter_name="pirate").eval()
    expected = _generate(peft, engine.tokenizer, PROMPT)
    assert _run(engine, PROMPT, "pirate") == expected
    assert expected != _run(engine, PROMPT)


@pytest.mark.slow
def test_a_burst_of_joiners_is_prefilled_together_and_each_gets_its_own_tokens(engine):
    # The rows decode together through the native attention kernel; alone, through SDPA (as generate).
    if engine.choice.attention != "native":
        missing_tool("the native decode-attention kernel did not build (no C compiler?)")
    requests = [(_chat(QUESTIONS[0]), ""), (PROMPT, "pirate"), (_chat(QUESTIONS[1]), "pirate"), (PROMPT, "")]
    alone = [_run(engine, prompt, adapter) for prompt, adapter in requests]
    shapes = []
    forward = engine._lean.forward

    def recording(tokens, *args, **kwargs):
        shapes.append(tuple(tokens.shape))
        return forward(tokens, *args, **kwargs)

    engine._lean.forward = recording
    try:
        with engine.paused():  # all four join before the next step
            streams = [
                engine.submit(GenerationRequest(params=SamplingParams(max_tokens=TOKENS), prompt=prompt, adapter=adapter))
                for prompt, adapter in requests
            ]
        together = [[event.token_id for event in stream if isinstance(event, TokenEvent)] for stream in streams]
    finally:
        engine._lean.forward = forward
    assert together == alone
    # Prompts of different lengths and adapters went through one prefill forward (rows x widest chunk).
    assert any(rows > 1 and width > 1 for rows, width in shapes)


@pytest.mark.slow
def test_penalized_greedy_tokens_match_openai_semantics_in_a_mixed_batch(engine):
    """Frequency/presence penalties as OpenAI and vLLM define them (this reply's tokens only, prompt not
    counted), checked against transformers' generate with that rule as a logits processor; a penalized row
    batched with unpenalized ones changes none of their tokens."""
    import torch
    from transformers import LogitsProcessorList
    from tutorforge.core.models import load_chat_model

    prompt, frequency, presence = "List of animals:\n- cat\n- dog\n-", 0.7, 0.4
    ids = engine.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    start = ids["input_ids"].shape[1]

    def openai_penalties(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids[:, start:], torch.ones_like(input_ids[:, start:], dtype=scores.dtype))
        return scores - counts * frequency - (counts > 0) * presence

    model = load_chat_model(engine._settings.models, dtype=torch.float32).eval()
    with torch.inference_mode():
        output = model.generate(
            **ids, max_new_tokens=TOKENS, do_sample=False, logits_processor=LogitsProcessorList([openai_penalties])
        )[0, start:].tolist()
    expected = [token for token in output if token not in (0, 2)]
    plain = _run(engine, prompt)
    assert expected != plain
    with engine.paused():
        others = [engine.submit(GenerationRequest(params=SamplingParams(max_tokens=TOKENS), prompt=prompt)) for _ in range(2)]
        penalized = engine.submit(GenerationRequest(
            params=SamplingParams(max_tokens=TOKENS, frequency_penalty=frequency, presence_penalty=presence, logprobs=1),
            prompt=prompt,
        ))
    events = [event for event in penalized if isinstance(event, TokenEvent)]
    assert [event.token_id for event in events] == expected
    for stream in others:
        assert [event.token_id for event in stream if isinstance(event, TokenEvent)] == plain
    # Logprobs are the model's distribution, before penalties: where the penalty first changed the choice,
    # the most likely token reported is the unpenalized greedy one.
    first = next(index for index, (a, b) in enumerate(zip(expected, plain, strict=False)) if a != b)
    assert events[first].logprobs[0].top[0][0] == engine.tokenizer.decode([plain[first]]) != events[first].logprobs[0].token


@pytest.mark.slow
def test_prefix_cache_hits_and_chunked_prefill_change_no_token(engine, tmp_path):
    first = {question: _run(engine, _chat(question)) for question in QUESTIONS}
    hits = engine._prefixes.hits
    # The second question shares the system prompt with the first: it starts from the cached prefix.
    assert _run(engine, _chat(QUESTIONS[1])) == first[QUESTIONS[1]]
    assert engine._prefixes.hits > hits
    # Another engine with no prefix cache and 16-token prefill chunks gives the same tokens.
    plain = _engine(tmp_path, inference__prefix_cache_mb=0, inference__prefill_chunk_tokens=16)
    try:
        for question, tokens in first.items():
            assert _run(plain, _chat(question)) == tokens
        assert plain._prefixes.hits == 0
    finally:
        plain.close()


def test_start_up_choice_is_measured_and_reported(tmp_path, caplog):
    caplog.set_level("INFO", logger="tutorforge.inference.embedded")
    settings = make_settings(tmp_path, inference__threads=0, inference__max_batch_size=4)
    engine = EmbeddedEngine(settings)
    try:
        engine.start()
        choice = engine.choice
        dtypes, threads = tuning.candidates("auto", 0)
        assert choice.dtype in ("float32", "bfloat16")
        # One core stays with the serving threads.
        assert 1 <= choice.threads <= max(1, (os.cpu_count() or 1) - 1)
        if len(dtypes) * len(threads) > 1:
            # Every candidate was timed, at batch 1 and at a full batch.
            assert choice.source == "measured" and len(choice.timings) == len(dtypes) * len(threads)
            assert all(one > 0 and full > 0 for one, full in choice.timings.values())
        else:  # a 2-core node without native bf16: float32 on one thread is the only candidate
            assert choice.source == "the only candidate" and (choice.dtype, choice.threads) == ("float32", 1)
        # The native decode-attention kernel serves float32 caches only.
        assert choice.attention in ("native", "sdpa") and (choice.dtype == "float32" or choice.attention == "sdpa")
        assert choice.describe() in caplog.text
        assert _run(engine, PROMPT, tokens=4)
    finally:
        engine.close()


def _counting(method, rows: list[int]):
    """`method` (called with a [rows, ...] tensor first), noting the rows of each call."""

    def counted(hidden, *rest):
        rows.append(hidden.shape[0])
        return method(hidden, *rest)

    return counted


class _CountingKernel:
    """The engine's decode-attention kernel, noting the rows of each call."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.rows: list[int] = []

    def supports(self, dtype) -> bool:
        return self.kernel.supports(dtype)

    def __call__(self, query, *rest):
        self.rows.append(query.shape[0])
        return self.kernel(query, *rest)


@pytest.mark.slow
def test_int8_weights_serve_base_and_adapters(tmp_path, tiny_adapters, monkeypatch):
    import torch

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        missing_tool("no C compiler (cc/gcc) to build the decode-attention kernel")
    engine = _engine(tmp_path, inference__quantize="int8", inference__prefill_chunk_tokens=16)
    try:
        lean = engine._lean
        # A bfloat16 cache, read by the kernel for every decode row, a request alone included.
        assert lean.decode_attention is not None and engine._cache.dtype == torch.bfloat16
        counting = _CountingKernel(lean.decode_attention)
        monkeypatch.setattr(lean, "decode_attention", counting)
        calls = counting.rows
        # Rows per pass through the int8 screen and through the full float head.
        heads: dict[str, list[int]] = {"screen": [], "full": []}
        for name, method in (("screen", lean.greedy_tokens), ("full", lean.logits)):
            monkeypatch.setattr(lean, method.__name__, _counting(method, heads[name]))
        for name, folder in tiny_adapters.items():
            engine.load_adapter(name, folder)
        # Chunks of 16 tokens: later chunks attend to columns already in the bfloat16 cache.
        base = _run(engine, _chat(QUESTIONS[0]))
        assert base and "ice" in engine.tokenizer.decode(base).lower()
        assert calls and set(calls) == {1}
        base = _run(engine, PROMPT)
        assert base and "Paris" in engine.tokenizer.decode(base)
        assert _run(engine, PROMPT, "pirate") != base
        # Plain greedy requests, first tokens included, never read the full head.
        assert heads["screen"] and set(heads["screen"]) == {1} and heads["full"] == []
        heads["screen"].clear()
        # Rows that need every logit (logprobs, a penalty) decode beside screened rows in one batch.
        params = [
            SamplingParams(max_tokens=8, ignore_eos=True, **options)
            for options in ({}, {"logprobs": 2}, {"frequency_penalty": 1.0})
        ]
        with engine.paused():
            streams = [engine.submit(GenerationRequest(params=p, prompt=PROMPT)) for p in params]
        events = [[event for event in stream if isinstance(event, TokenEvent)] for stream in streams]
        assert all(len(found) == 8 for found in events)
        assert all(len(event.logprobs) == 1 and len(event.logprobs[0].top) == 2 for event in events[1])
        assert 3 in calls
        # In that batch every token of the plain row came from the screen and every token of the other two
        # from the full head, which they shared in the steps where both decoded.
        assert set(heads["screen"]) == {1} and sum(heads["screen"]) == 8
        assert sum(heads["full"]) == 16 and 2 in heads["full"] and 3 not in heads["full"]
    finally:
        engine.close()


@pytest.mark.slow
def test_int8_without_the_native_kernel_keeps_a_float32_cache_for_sdpa(tmp_path):
    """Where the kernel cannot be built (the container image has no compiler) or is turned off, SDPA cannot
    read a bfloat16 cache without a copy a layer: the int8 engine's cache stays float32."""
    import torch

    engine = _engine(tmp_path, inference__quantize="int8", inference__attention_kernel="sdpa")
    try:
        assert engine._lean.decode_attention is None and engine._cache.dtype == torch.float32
        assert engine.choice.attention == "sdpa"
        with engine.paused():
            streams = [engine.submit(GenerationRequest(params=SamplingParams(max_tokens=TOKENS), prompt=PROMPT)) for _ in range(2)]
        for stream in streams:
            assert "Paris" in engine.tokenizer.decode([e.token_id for e in stream if isinstance(e, TokenEvent)])
    finally:
        engine.close()


@pytest.mark.slow
def test_the_int8_screen_picks_the_float_heads_greedy_token(tmp_path):
    """An int8 engine's greedy tokens come from its int8 screen re-scored by the float head: the argmax
    of the float32 head's logits for the same hidden states."""
    import torch

    engine = _engine(tmp_path, inference__quantize="int8")
    try:
        lean = engine._lean
        hidden = []
        with torch.inference_mode():
            for question in QUESTIONS:
                ids = engine.tokenizer(_chat(question), add_special_tokens=False)["input_ids"]
                for end in range(len(ids) - 24, len(ids) + 1, 2):
                    cache = engine._new_cache()
                    cache.take()
                    hidden.append(
                        lean.forward(torch.tensor([ids[:end]]), torch.arange(end)[None], cache, torch.tensor([0]),
                                     torch.tensor([0]), [], end, None, True)[0]
                    )
            hidden = torch.stack(hidden)
            # SmolLM2's head is its embedding, kept in float32 beside the bf16 head copy.
            assert lean.tied and lean.embed.dtype == torch.float32
            head = lean.embed
            expected = (hidden @ head.T).argmax(dim=-1).tolist()
            assert lean.greedy_tokens(hidden) == expected
    finally:
        engine.close()


@pytest.mark.slow
def test_a_grown_kv_cache_is_kept_for_the_next_burst_and_given_back_when_idle(engine, monkeypatch):
    from tutorforge.inference import embedded

    def burst() -> None:
        # More rows than a fresh cache has slots: the cache grows.
        with engine.paused():
            streams = [engine.submit(GenerationRequest(params=SamplingParams(max_tokens=2), prompt=PROMPT)) for _ in range(6)]
        assert all(any(isinstance(event, TokenEvent) for event in stream) for stream in streams)

    fresh = engine._new_cache().nbytes()
    monkeypatch.setattr(embedded, "_SHRINK_ABOVE_BYTES", fresh)
    monkeypatch.setattr(embedded, "_SHRINK_AFTER_IDLE_S", 3.0)
    burst()
    cache = engine._cache
    assert cache.nbytes() > fresh
    # A burst right behind the last one finds the cache as it was (no regrowth before its first token).
    burst()
    assert engine._cache is cache
    deadline = time.monotonic() + 30
    while engine._cache is cache and time.monotonic() < deadline:
        time.sleep(0.1)
    # Idle for the grace period: the grown cache was given back, and the engine still serves.
    assert engine._cache is not cache and engine._cache.nbytes() == fresh
    assert _run(engine, PROMPT, tokens=4)
