"""The parts of the OpenAI Chat Completions API that frontends rely on, beyond one plain reply: `n` choices,
`logprobs`/`top_logprobs`, usage at the end of a stream (`stream_options.include_usage`), and a clear
refusal of the function-calling fields (the tutor calls no tools). The HTTP door (http.py) parses the
body and starts the turns; the replies, streamed or whole, are built here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel

from tutorforge.core.errors import InvalidArgument, TutorforgeError, status_of
from tutorforge.inference.service import ChatTurn
from tutorforge.inference.types import GenerationSummary, TokenEvent, TokenLogprob

# Choices per request: each is a generation of its own.
MAX_CHOICES = 8
# Function calling: refused by name rather than silently ignored, so a frontend learns at once.
_FUNCTION_FIELDS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")


class OpenAIFields(BaseModel):
    """Request fields the door reads besides the basic ones (mixed into its request model)."""

    logprobs: bool = False
    top_logprobs: int | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None


def checked_logprobs(body: OpenAIFields, n: int) -> int | None:
    """Refuse what the door does not do (naming the field); the number of alternatives per token to
    report, or None when the request wants no logprobs."""
    for name in _FUNCTION_FIELDS:
        if getattr(body, name) is not None:
            raise InvalidArgument(
                f"{name} is not supported: the tutor replies in text and calls no functions; remove {name} "
                "(use response_format for JSON replies)"
            )
    if not 1 <= n <= MAX_CHOICES:
        raise InvalidArgument(f"n {n} is out of range: use 1..{MAX_CHOICES}")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidArgument("top_logprobs needs logprobs: true")
    return (body.top_logprobs or 0) if body.logprobs else None


def start_choices(start: Callable[[int | None], ChatTurn], n: int, seed: int | None) -> list[ChatTurn]:
    """`n` turns of the same request; with a seed, choice i samples with seed + i (reproducible, yet
    different choices). If one cannot start, those already started are cancelled."""
    turns: list[ChatTurn] = []
    try:
        for index in range(n):
            turns.append(start(None if seed is None else seed + index))
    except BaseException:
        for turn in turns:
            turn.stream.cancel()
        raise
    return turns


def finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def usage(summaries: list[GenerationSummary]) -> dict[str, int]:
    """OpenAI's usage: the prompt once, the completion tokens of every choice."""
    prompt = summaries[0].prompt_tokens if summaries else 0
    completion = sum(summary.completion_tokens for summary in summaries)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _logprob_entries(logprobs: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return [{**entry(item.token, item.logprob), "top_logprobs": [entry(t, lp) for t, lp in item.top]} for item in logprobs]


def whole_reply(header: dict[str, Any], turns: list[ChatTurn], with_logprobs: bool) -> dict[str, Any]:
    """The non-streamed chat.completion body of all choices."""
    choices, summaries = [], []
    for index, turn in enumerate(turns):
        parts: list[str] = []
        entries: list[dict[str, Any]] = []
        summary: GenerationSummary | None = None
        for event in turn.stream:
            if isinstance(event, TokenEvent):
                parts.append(event.text)
                entries += _logprob_entries(event.logprobs)
            else:
                summary = event
        assert summary is not None  # a stream always ends with its summary
        summaries.append(summary)
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": turn.preamble + "".join(parts)},
            "finish_reason": finish_reason(summary.finish_reason),
        }
        if with_logprobs:
            choice["logprobs"] = {"content": entries}
        choices.append(choice)
    return {
        **header,
        "choices": choices,
        "usage": usage(summaries),
        "citations": [asdict(c) for c in turns[0].citations],
        "tutorforge": {"adapter": summaries[0].adapter, "fell_back_to_base": summaries[0].fell_back_to_base},
    }


def streamed_reply(
    header: dict[str, Any], turns: list[ChatTurn], include_usage: bool, with_logprobs: bool
) -> Iterator[str]:
    """Server-sent chat.completion.chunk events: each choice in turn (chunks carry its index), then the
    usage of all when asked for, then [DONE]. An error mid-stream ends it with an error event."""

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if "logprobs" in extra:
            choice["logprobs"] = extra.pop("logprobs")
        body = {**header, "choices": [choice], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    summaries: list[GenerationSummary] = []
    try:
        for index, turn in enumerate(turns):
            citations = [asdict(c) for c in turn.citations]
            yield chunk(index, {"role": "assistant", "content": turn.preamble}, citations=citations)
            for event in turn.stream:
                if isinstance(event, TokenEvent):
                    if event.text or event.logprobs:
                        extra = {"logprobs": {"content": _logprob_entries(event.logprobs)}} if with_logprobs else {}
                        yield chunk(index, {"content": event.text}, **extra)
                    continue
                summaries.append(event)
                extra = {"tutorforge": {"adapter": event.adapter, "fell_back_to_base": event.fell_back_to_base}}
                yield chunk(index, {}, finish_reason(event.finish_reason), **extra)
        if include_usage:
            yield f"data: {json.dumps({**header, 'choices': [], 'usage': usage(summaries)})}\n\n"
        yield "data: [DONE]\n\n"
    except TutorforgeError as error:
        code, message = status_of(error)
        yield f"data: {json.dumps({'error': {'message': message, 'type': code.name.lower(), 'code': code.name}})}\n\n"
    finally:
        # The client went away (or the reply ended): free every choice's generation slot.
        for turn in turns:
            turn.stream.cancel()
