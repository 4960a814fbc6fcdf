"""Per-record validation: structure of the conversation and its length in the chosen model's tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tutorforge.core.settings import ModelSettings

DEFAULT_MAX_TOKENS = 2048
ROLES = ("system", "user", "assistant")
# No tokenizer packs more than this many characters into one token on real text, so longer records are
# rejected without tokenizing megabytes.
_MAX_CHARS_PER_TOKEN = 32

TokenCounter = Callable[[list[dict[str, str]]], int]


def chat_token_counter(models: ModelSettings) -> tuple[TokenCounter, str]:
    """Counts a conversation's tokens with the chat template applied; returns it and the tokenizer name."""
    from tutorforge.core.models import chat_model_name, load_chat_tokenizer

    tokenizer = load_chat_tokenizer(models)

    def count(conversation: list[dict[str, str]]) -> int:
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
        return len(ids)

    return count, chat_model_name(models)


def structure_problem(conversation: Any) -> str | None:
    """Why a conversation is malformed, or None: roles alternate user/assistant after an optional system
    turn, it ends with an assistant turn, and no turn is empty."""
    if not isinstance(conversation, list) or not conversation:
        return "no turns (conversations is empty)"
    for position, turn in enumerate(conversation):
        role = turn.get("role")
        if role not in ROLES:
            return f"turn {position} has unknown role {role!r} (use system, user or assistant)"
        if not str(turn.get("content", "")).strip():
            return f"turn {position} ({role}) has empty content"
    body = conversation[1:] if conversation[0]["role"] == "system" else conversation
    if not body:
        return "only a system turn: a user and an assistant turn are required"
    for position, turn in enumerate(body):
        expected = "user" if position % 2 == 0 else "assistant"
        if turn["role"] != expected:
            absolute = position + (len(conversation) - len(body))
            return f"turn {absolute} is {turn['role']!r} where {expected!r} was expected (roles must alternate user/assistant after an optional system turn)"
    if body[-1]["role"] != "assistant":
        return "the conversation must end with an assistant turn"
    return None


def validate_record(record: dict[str, Any], count_tokens: TokenCounter, max_tokens: int) -> tuple[str | None, int]:
    """(problem or None, token count) for one normalised record."""
    if not isinstance(record.get("conversations"), list):
        return "missing required field 'conversations'", 0
    problem = structure_problem(record["conversations"])
    if problem:
        return problem, 0
    characters = sum(len(turn["content"]) for turn in record["conversations"])
    if characters > max_tokens * _MAX_CHARS_PER_TOKEN:
        return f"too long: {characters} characters, far above the {max_tokens}-token limit", 0
    tokens = count_tokens(record["conversations"])
    if tokens > max_tokens:
        return f"too long: {tokens} tokens (limit {max_tokens})", tokens
    return None, tokens
