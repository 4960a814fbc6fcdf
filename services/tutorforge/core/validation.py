"""Up-front checks every request passes before a servicer sees it, read from the proto descriptors so
that no field of any RPC is left out: known enum values, finite numbers, string sizes, repeated/map
counts, and request bytes that decode at all. Plus the helpers domain code shares for user-given text:
a bounded echo of a value in an error message and JSON parsing with a nesting limit.

Domain rules (ranges, names, references) stay in the domain modules; this module only refuses what no
RPC can mean, naming the field path (e.g. `filters[0].range.gt`) so the caller knows what to fix."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from tutorforge.core.errors import InvalidArgument

# Longest piece of a user-given value an error message quotes: messages travel in trailing metadata,
# where a multi-megabyte echo would turn the answer into RESOURCE_EXHAUSTED.
MAX_ECHO_CHARS = 80
# Deepest JSON nesting accepted in user files (records, lesson cards, evaluation sets, schemas).
MAX_JSON_DEPTH = 64
# Strings are short (names, ids, roles, filenames, metadata) unless their field carries free text.
MAX_SHORT_CHARS = 4096
MAX_TEXT_CHARS = 4 * 1024 * 1024
TEXT_FIELDS = frozenset(
    {"prompt", "content", "system_prompt", "instructions", "query", "response", "schema", "description", "equals"}
)
MAX_REPEATED = 10_000
MAX_MAP_ENTRIES = 1_000

_FLOATS = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters with the full length noted, for error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} chars)" if isinstance(value, str | bytes) else ""
    return f"{text[:limit]}…{size}"


def loads_json(text: str | bytes, where: str) -> Any:
    """json.loads, refusing nesting deeper than MAX_JSON_DEPTH with InvalidArgument naming `where`.

    JSONDecodeError passes through: callers word their own "not JSON" message."""
    try:
        value = json.loads(text)
    except RecursionError as error:
        raise _too_deep(where) from error
    if json_depth(value) > MAX_JSON_DEPTH:
        raise _too_deep(where)
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(where: str) -> InvalidArgument:
    return InvalidArgument(f"{where} nests JSON more than {MAX_JSON_DEPTH} levels deep; flatten it")


def validate_message(message: Message, path: str = "") -> None:
    """Raise InvalidArgument naming the first field of `message` (recursively) that no RPC accepts."""
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_map(field, value, where)
        elif field.is_repeated:
            if len(value) > MAX_REPEATED:
                raise InvalidArgument(f"{where} has {len(value)} items; at most {MAX_REPEATED} are accepted")
            for index, item in enumerate(value):
                _check_value(field, item, f"{where}[{index}]")
        else:
            _check_value(field, value, where)


def _check_map(field: FieldDescriptor, value: Any, where: str) -> None:
    if len(value) > MAX_MAP_ENTRIES:
        raise InvalidArgument(f"{where} has {len(value)} entries; at most {MAX_MAP_ENTRIES} are accepted")
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    for key, item in value.items():
        _check_value(key_field, key, f"{where} key")
        _check_value(value_field, item, f"{where}[{echo(key)}]")


def _check_value(field: FieldDescriptor, value: Any, where: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        validate_message(value, f"{where}.")
    elif field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if value not in enum.values_by_number:
            known = ", ".join(v.name for v in enum.values)
            raise InvalidArgument(f"{where} {value} is not a known {enum.name}; use one of {known}")
    elif field.type in _FLOATS:
        if not math.isfinite(value):
            raise InvalidArgument(f"{where} is {value}: give a finite number")
    elif field.type == FieldDescriptor.TYPE_STRING:
        limit = MAX_TEXT_CHARS if field.name in TEXT_FIELDS else MAX_SHORT_CHARS
        if len(value) > limit:
            raise InvalidArgument(f"{where} is {len(value)} characters long; at most {limit} are accepted")


class UndecodableRequest:
    """What a guarded deserializer returns for bytes that do not parse, so that the call can answer
    INVALID_ARGUMENT instead of grpc's own INTERNAL "Exception deserializing request!"."""

    def __init__(self, type_name: str, error: Exception):
        self.message = f"the request does not decode as {type_name} ({echo(str(error))}); send a serialized {type_name}"


def guard_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    type_name = type_name.full_name if type_name is not None else "the request message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, ValueError, RuntimeError) as error:
            return UndecodableRequest(type_name, error)

    return deserialize


def checked_request(request: Any) -> Any:
    """The request (a message, or the iterator of a client stream) after the up-front checks."""
    if isinstance(request, Message | UndecodableRequest):
        return _checked(request, "")
    if isinstance(request, Iterator):
        return _checked_stream(request)
    # A handler without a deserializer (raw bytes) has no fields to check.
    return request


def _checked(request: Message | UndecodableRequest, where: str) -> Message:
    if isinstance(request, UndecodableRequest):
        raise InvalidArgument(f"{where}{request.message}")
    validate_message(request)
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Message]:
    for index, request in enumerate(requests):
        if isinstance(request, UndecodableRequest):
            raise InvalidArgument(f"stream message {index}: {request.message}")
        try:
            validate_message(request)
        except InvalidArgument as error:
            raise InvalidArgument(f"stream message {index}: {error.message}") from error
        yield request
