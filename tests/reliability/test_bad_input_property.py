"""Property-based bad input: for every RPC of every service, hypothesis builds requests from the proto
descriptors (huge strings, NaN/inf, unknown enum numbers, deep JSON, garbage bytes, every field set or
not) and sends them to a real server. Whatever the request, the answer is never INTERNAL/UNKNOWN, a
refusal names a field of the request, a refused call leaves the store as it was, and health answers.

Requests stay cheap on purpose: generation lengths are small (the server's default is 4 tokens) and no
strategy produces a valid record file, so no dataset is built and no training run starts."""

from __future__ import annotations

import math
import re

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.reliability_helpers import BROKEN, call, field_names, healthy, methods, snapshot

HUGE = "h" * 5_000
DEEP = b"[" * 3_000 + b"]" * 3_000
# Statuses whose message must name what to fix in the request.
NAMING = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}
# Fields that take a number of generated tokens or items: kept small so that a valid request stays quick.
SMALL_COUNTS = {"max_tokens", "num_conversations", "num_exchanges", "exchanges", "max_chunks", "max_examples",
                "dialogues_per_card", "trials", "candidates", "max_steps", "epochs"}
INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}

strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "../x", "a/b", "nosuch", "Bad Name", "a@b@c", "base", "adapter:x", "program:x",
                     "\x00", "ünïcødé", HUGE]),
)
binaries = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\xff\xfe", b"[1, 2", b"{}", b"[]", DEEP, b'{"a": 1}\n{']))


def _floats(field: FieldDescriptor) -> st.SearchStrategy[float]:
    width = 32 if field.type == FieldDescriptor.TYPE_FLOAT else 64
    return st.one_of(
        st.floats(width=width, allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 0.5, 2.0]),
    )


def _ints(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = INT_BOUNDS.get(field.type, (0, 2**32 - 1))
    if field.name in SMALL_COUNTS:
        return st.sampled_from([-1, 0, 1, 2, high])
    return st.one_of(st.integers(-3, 12), st.sampled_from([low, high]))


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 99, 2**31 - 1]))
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return _floats(field)
    if kind == FieldDescriptor.TYPE_STRING:
        return strings
    if kind == FieldDescriptor.TYPE_BYTES:
        return binaries
    if kind == FieldDescriptor.TYPE_BOOL:
        # The bundled lesson cards would start a real (long) dataset build.
        return st.just(False) if field.name == "bundled" else st.booleans()
    return _ints(field)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        entry = field.message_type
        return st.dictionaries(
            _scalar(entry.fields_by_name["key"], depth), _scalar(entry.fields_by_name["value"], depth), max_size=3
        )
    if field.is_repeated:
        return st.lists(_scalar(field, depth), max_size=3)
    return _scalar(field, depth)


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy:
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    return st.fixed_dictionaries({}, optional={f.name: st.deferred(lambda f=f: _field(f, depth)) for f in descriptor.fields}).map(
        lambda values: _build(cls, values)
    )


def _build(cls: type, values: dict) -> object:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name) if field.message_type is not None or field.is_repeated else None
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if field.message_type.fields_by_name["value"].message_type is not None:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


METHODS = sorted(methods())


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_any_request_gets_a_clear_answer(served, name: str) -> None:
    method = methods()[name]
    requests = message_strategy(method.input_type)
    if method.client_streaming:
        requests = st.lists(requests, min_size=1, max_size=4)
    names = field_names(method.input_type)

    @settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(request=requests)
    def probe(request: object) -> None:
        before = snapshot(served.store)
        answer = call(served.channel, name, request, timeout=60)
        assert answer.code not in BROKEN, f"{name}: {answer.code.name} {answer.details}\nrequest: {str(request)[:2000]}"
        if answer.code in NAMING:
            mentioned = {word for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", answer.details)}
            filenames = _filenames(request)
            assert mentioned & names or any(f and f in answer.details for f in filenames), (
                f"{name}: refusal names no field: {answer.details}"
            )
        if answer.code != grpc.StatusCode.OK:
            assert snapshot(served.store) == before, f"{name}: the store changed on a refused call"
        assert healthy(served.channel)

    probe()


def _filenames(request: object) -> set[str]:
    """Filenames set anywhere in the request: file-content errors name the file."""
    found = set()
    items = request if isinstance(request, list) else [request]
    while items:
        message = items.pop()
        for field, value in message.ListFields():
            if field.name == "filename":
                found.add(value)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                items.extend(value if field.is_repeated else [value])
    return found
