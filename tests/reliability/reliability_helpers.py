"""Calling any RPC of tutorforge by name from the proto descriptors, and the invariants every refused
call must keep: a clear status naming the field, the store unchanged, the server healthy."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tutorforge.v1 import datasets_pb2, inference_pb2, optimization_pb2, retrieval_pb2, training_pb2

MODULES = (retrieval_pb2, datasets_pb2, inference_pb2, training_pb2, optimization_pb2)
# Statuses that say "the server broke", never acceptable for any input.
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def methods() -> dict[str, MethodDescriptor]:
    """Every tutorforge RPC by "Service/Method" (e.g. "RetrievalService/Search")."""
    found = {}
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"{service.name}/{method.name}"] = method
    return found


def request_class(method: MethodDescriptor) -> type:
    return message_factory.GetMessageClass(method.input_type)


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    trailers: tuple = ()


def call(channel: grpc.Channel, name: str, request: Any, timeout: float = 60, raw: bool = False) -> Answer:
    """Call RPC `name` with `request` (a message, a list of messages for client streams, or bytes when
    `raw`); server streams are read to the end."""
    method = methods()[name]
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = (lambda data: data) if raw else (lambda message: message.SerializeToString())
    deserialize = message_factory.GetMessageClass(method.output_type).FromString
    streaming_in, streaming_out = method.client_streaming, method.server_streaming
    kind = {(False, False): "unary_unary", (False, True): "unary_stream", (True, False): "stream_unary"}[
        (streaming_in, streaming_out)
    ]
    stub = getattr(channel, kind)(path, request_serializer=serialize, response_deserializer=deserialize)
    try:
        if streaming_in:
            _, rpc = stub.with_call(iter(request), timeout=timeout)
        elif streaming_out:
            rpc = stub(request, timeout=timeout)
            for _ in rpc:
                pass
        else:
            _, rpc = stub.with_call(request, timeout=timeout)
        return Answer(grpc.StatusCode.OK, "", tuple(rpc.trailing_metadata() or ()))
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "", tuple(error.trailing_metadata() or ()))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the store and a hash of its bytes."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def healthy(channel: grpc.Channel, timeout: float = 5) -> bool:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return response.status == health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def field_names(descriptor: Any, seen: set[str] | None = None) -> set[str]:
    """Names of every field of a message type, recursively (what a refusal may name)."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return set()
    seen.add(descriptor.full_name)
    names = set()
    for field in descriptor.fields:
        names.add(field.name)
        if field.message_type is not None:
            names |= field_names(field.message_type, seen)
    return names


def repeat(message: Any, count: int) -> Iterable[Any]:
    return [message] * count
