"""The shared checks on their own (no server): bounded echoes, JSON nesting, descriptor-driven field
checks, undecodable bytes, and the sizing of the worker pool above the concurrency limits."""

from __future__ import annotations

import json

import pytest
from tutorforge.core.admission import Admission, Limit
from tutorforge.core.errors import InvalidArgument, ResourceExhausted, status_of
from tutorforge.core.settings import ServerSettings
from tutorforge.core.validation import (
    MAX_JSON_DEPTH,
    UndecodableRequest,
    checked_request,
    echo,
    guard_deserializer,
    loads_json,
)
from tutorforge.v1 import datasets_pb2, retrieval_pb2


def test_echo_cuts_long_values_and_says_how_long() -> None:
    assert echo("short") == "'short'"
    cut = echo("x" * 10_000)
    assert len(cut) < 120 and "(10000 chars)" in cut


def test_status_messages_are_bounded() -> None:
    _, message = status_of(InvalidArgument("name " + "y" * 50_000 + " is bad"))
    assert len(message) < 2100 and "cut at 2000" in message


def test_json_nesting_is_bounded_without_recursion() -> None:
    assert loads_json(json.dumps([[[1]]]), "f") == [[[1]]]
    nested = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(InvalidArgument, match="f nests JSON more than"):
        loads_json(nested, "f")
    with pytest.raises(InvalidArgument, match="g nests JSON"):
        loads_json("[" * 100_000 + "]" * 100_000, "g")


def test_field_paths_name_the_bad_field() -> None:
    request = retrieval_pb2.SearchRequest(
        query="q", filters=[retrieval_pb2.MetadataFilter(field="grade", range=retrieval_pb2.NumericRange(lte=float("inf")))]
    )
    with pytest.raises(InvalidArgument, match=r"filters\[0\]\.range\.lte is inf"):
        checked_request(request)
    with pytest.raises(InvalidArgument, match=r"files\[0\]\.format 42 is not a known RecordFormat"):
        checked_request(datasets_pb2.ValidateRecordsRequest(files=[datasets_pb2.RecordFile(filename="a", format=42)]))
    stream = checked_request(iter([retrieval_pb2.IngestDocumentsRequest(), retrieval_pb2.IngestDocumentsRequest(
        document=retrieval_pb2.DocumentHeader(filename="f" * 5000))]))
    assert next(stream) is not None
    with pytest.raises(InvalidArgument, match=r"stream message 1: document\.filename is 5000 characters"):
        next(stream)


def test_undecodable_bytes_name_the_message_type() -> None:
    deserialize = guard_deserializer(retrieval_pb2.SearchRequest.FromString)
    request = deserialize(b"\xff\xff\xff")
    assert isinstance(request, UndecodableRequest)
    with pytest.raises(InvalidArgument, match="does not decode as tutorforge.v1.SearchRequest"):
        checked_request(request)


def test_worker_pool_exceeds_the_limits_so_health_always_has_a_thread() -> None:
    settings = ServerSettings(max_workers=8, max_concurrent_unary=10, max_concurrent_server_streams=10,
                              max_concurrent_client_streams=2, max_concurrent_open_streams=2, reserved_workers=4)
    assert Admission(settings).workers == 28
    limit = Limit(1, "things", 250)
    limit.take()
    with pytest.raises(ResourceExhausted, match="limit of 1 concurrent things; retry after 250 ms"):
        limit.take()
    limit.give_back()
    limit.take()
