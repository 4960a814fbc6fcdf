"""Helpers shared by the service CLIs: connection options, JSON output, error exits, progress."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console

from tutorforge.core.client import open_channel

console = Console(stderr=False)
err_console = Console(stderr=True)

AddressOption = Annotated[
    str,
    typer.Option("--address", envvar="TUTORFORGE_ADDRESS", help="gRPC address HOST:PORT of the tutorforge server."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
DEFAULT_ADDRESS = "127.0.0.1:50051"


def connect(address: str) -> grpc.Channel:
    """A channel to `address`, carrying TUTORFORGE_SERVER__API_TOKEN when it is set."""
    return open_channel(address, os.environ.get("TUTORFORGE_SERVER__API_TOKEN") or None)


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def print_json(value: Message | dict[str, Any] | list[Any]) -> None:
    data = to_dict(value) if isinstance(value, Message) else value
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def rpc_errors(address: str) -> Iterator[None]:
    """Turn a failed call into the server's message on stderr and a non-zero exit."""
    try:
        yield
    except grpc.RpcError as error:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"cannot reach tutorforge at {address} ({details}); start it with `tutorforge serve all`"
        err_console.print(f"[bold red]error[/] {code.name}: {details}")
        raise typer.Exit(code=2) from None
