"""Plain Python values to the protos' enums, messages and options, refusing what is not one by name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.message import Message

from tutorforge.core.errors import InvalidArgument
from tutorforge.v1 import common_pb2


def enum_value(enum: Any, prefix: str, value: int | str, field: str) -> int:
    """`value` as a member of the proto enum: its number, or its name without `prefix` ("hybrid")."""
    if isinstance(value, int):
        return value
    name = f"{prefix}{value.strip().upper().replace('-', '_')}"
    names = enum.keys()
    if name not in names:
        choices = ", ".join(key.removeprefix(prefix).lower() for key in names if not key.endswith("UNSPECIFIED"))
        raise InvalidArgument(f"{field}: {value!r} is not one of {choices}")
    return enum.Value(name)


def message(kind: type[Message], value: Message | Mapping[str, Any] | None, field: str) -> Message | None:
    """A proto message from itself or from a mapping of its fields (an unknown field is named)."""
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(**value)
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"{field}: {error}") from error


def chat_messages(conversation: str | Iterable[Any]) -> list[common_pb2.ChatMessage]:
    """A student's question, or turns given as ChatMessage, {"role", "content"} or (role, content)."""
    if isinstance(conversation, str):
        return [common_pb2.ChatMessage(role="user", content=conversation)]
    turns = []
    for index, turn in enumerate(conversation):
        if isinstance(turn, common_pb2.ChatMessage):
            turns.append(turn)
        elif isinstance(turn, Mapping):
            turns.append(common_pb2.ChatMessage(role=turn.get("role", ""), content=turn.get("content", "")))
        elif isinstance(turn, tuple) and len(turn) == 2:
            turns.append(common_pb2.ChatMessage(role=turn[0], content=turn[1]))
        else:
            raise InvalidArgument(f"messages[{index}]: give a ChatMessage, a role/content mapping or a (role, content) pair")
    return turns
