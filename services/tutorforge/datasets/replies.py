"""Robust parsing of model replies that should hold JSON conversations.

Small models wrap JSON in prose or code fences, leave trailing commas, use single quotes, stop before the
closing brackets, and name roles "student"/"tutor". What is safely repairable is repaired; the rest is
rejected with a reason."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

ROLE_ALIASES = {
    "user": "user",
    "student": "user",
    "learner": "user",
    "human": "user",
    "pupil": "user",
    "assistant": "assistant",
    "tutor": "assistant",
    "teacher": "assistant",
    "ai": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[\]}])")


@dataclass
class ParsedReply:
    """Conversations found in one reply, the repairs applied, and why the rest was rejected."""

    conversations: list[list[dict[str, str]]] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def _candidates(text: str) -> list[str]:
    """JSON-looking spans: fenced blocks first, then from the first bracket to the end."""
    spans = [match.group(1).strip() for match in _FENCE.finditer(text) if match.group(1).strip()]
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if starts:
        spans.append(text[min(starts):].strip())
    return spans


def _scan(text: str) -> tuple[list[str], int, int | None]:
    """(closing brackets still owed at the end, index after the last closing bracket, end of the first
    complete top-level value or None), ignoring brackets inside strings."""
    stack: list[str] = []
    in_string = False
    escaped = False
    last_close = 0
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            stack.append("]" if char == "[" else "}")
        elif char in "]}":
            if not stack:
                return stack, last_close, i
            stack.pop()
            last_close = i + 1
            if not stack:
                return stack, last_close, i + 1
    return stack, last_close, None


def _close_brackets(text: str) -> str:
    """Keep the first complete value; or cut back to the last closed object (so a half-written turn is
    dropped rather than invented) and close the brackets left open."""
    _, last_close, end = _scan(text)
    if end is not None:
        return text[:end]
    head = (text[:last_close] if last_close else text).rstrip().rstrip(",")
    owed, _, _ = _scan(head)
    return head + "".join(reversed(owed))


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Small models run turns together as {"role": .., "content": .., "role": ..}: keeping the last value of
    # each key would silently invent a conversation, so such objects are refused.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(f"an object repeats the key(s) {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _literal(text: str) -> Any:
    """Python-style literals (single quotes, True/None) read without running code; None if not one."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [key.value for key in node.keys if isinstance(key, ast.Constant)]
            if len(set(keys)) != len(keys):
                raise _DuplicateKey("an object repeats a key")
    try:
        return ast.literal_eval(tree)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _load(span: str, repairs: list[str]) -> Any:
    """The JSON value in `span`, repaired if needed; None when it cannot be read. Raises _DuplicateKey."""
    try:
        return json.loads(span, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError:
        pass
    text = span
    closed = _close_brackets(text)
    if closed != text:
        repairs.append("closed unterminated brackets" if len(closed) >= len(text.rstrip()) else "cut trailing text")
        text = closed
    without_commas = _TRAILING_COMMA.sub(r"\1", text)
    if without_commas != text:
        repairs.append("removed trailing commas")
        text = without_commas
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError:
        pass
    value = _literal(text)
    if value is not None:
        repairs.append("read single-quoted JSON")
    return value


def _turns(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        for key in ("conversations", "messages", "conversation", "dialogue", "turns"):
            if isinstance(value.get(key), list):
                return value[key]
        return None
    return value if isinstance(value, list) else None


def _is_turn(value: Any) -> bool:
    return isinstance(value, dict) and any(key in value for key in ("role", "from", "speaker"))


def _normalize_turn(turn: dict[str, Any], repairs: list[str]) -> dict[str, str] | str:
    role = str(turn.get("role", turn.get("from", turn.get("speaker", "")))).strip().lower()
    content = turn.get("content", turn.get("value", turn.get("text")))
    mapped = ROLE_ALIASES.get(role)
    if mapped is None:
        return f"unknown role {role!r}"
    if mapped != role:
        repairs.append(f"role {role!r} read as {mapped!r}")
    if not isinstance(content, str) or not content.strip():
        return f"empty content in a {mapped} turn"
    return {"role": mapped, "content": content.strip()}


def _conversation(raw: Any, repairs: list[str]) -> list[dict[str, str]] | str:
    turns = _turns(raw)
    if not turns:
        return "not a list of turns"
    normalized = []
    for turn in turns:
        if not isinstance(turn, dict):
            return "a turn is not an object"
        result = _normalize_turn(turn, repairs)
        if isinstance(result, str):
            return result
        normalized.append(result)
    return normalized


def parse_conversations(text: str) -> ParsedReply:
    """Every conversation found in `text`, as lists of {"role", "content"} turns with canonical roles."""
    reply = ParsedReply()
    if not text.strip():
        reply.rejected.append("empty reply")
        return reply
    value = None
    problem = "no parseable JSON in the reply"
    for span in _candidates(text):
        repairs: list[str] = []
        try:
            value = _load(span, repairs)
        except _DuplicateKey as error:
            problem = f"{error} (turns run together in one object)"
            continue
        if value is not None:
            reply.repairs.extend(repairs)
            break
    if value is None:
        reply.rejected.append(problem)
        return reply
    # One conversation (a list of turns or {"conversations": [...]}) or a list of conversations.
    turns = _turns(value)
    items = [value] if turns and all(_is_turn(turn) for turn in turns) else (value if isinstance(value, list) else [value])
    for index, item in enumerate(items):
        result = _conversation(item, reply.repairs)
        if isinstance(result, str):
            reply.rejected.append(f"conversation {index}: {result}")
        else:
            reply.conversations.append(result)
    reply.repairs = list(dict.fromkeys(reply.repairs))
    return reply
