"""Helpers shared by the service CLIs: connection options, JSON output, error exits, progress."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tutorforge.artifacts.reports import comparison_rows
from tutorforge.client import JobHandle, Tutorforge
from tutorforge.core.errors import TutorforgeError, Unavailable
from tutorforge.core.settings import Settings
from tutorforge.v1 import common_pb2, optimization_pb2

console = Console(stderr=False)
err_console = Console(stderr=True)

AddressOption = Annotated[
    str,
    typer.Option("--address", envvar="TUTORFORGE_ADDRESS", help="gRPC address HOST:PORT of the tutorforge server."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
DEFAULT_ADDRESS = "127.0.0.1:50051"


def connect(address: str) -> Tutorforge:
    """The SDK's clients of the server at `address` (its deadlines, retries and domain errors), carrying
    TUTORFORGE_SERVER__API_TOKEN when it is set, over TLS when TUTORFORGE_TLS__CA_FILE names the CA of the
    server's certificate (plus cert/key files for mTLS)."""
    return Tutorforge(address, token=os.environ.get("TUTORFORGE_SERVER__API_TOKEN") or None, tls=Settings().tls)


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def print_json(value: Message | dict[str, Any] | list[Any]) -> None:
    data = to_dict(value) if isinstance(value, Message) else value
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def rpc_errors() -> Iterator[None]:
    """Turn a failed call (the domain error the client SDK raises; its message names the address it could
    not reach) into the server's message on stderr and a non-zero exit."""
    try:
        yield
    except TutorforgeError as error:
        code, details = error.code, error.message
        if isinstance(error, Unavailable):
            details += "; start it with `tutorforge serve all`"
        # Unwrapped and unstyled: the message names a field or a path to copy.
        err_console.print(f"[bold red]error[/] {code.name}: {escape(details)}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None


def job_state_label(state: int) -> str:
    """'succeeded', 'failed', ... for a JobState value."""
    return common_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def follow_job(
    events: Iterable[common_pb2.JobEvent],
    *,
    label: str = "",
    metric: str = "",
    out: Console = err_console,
    quiet: bool = False,
) -> None:
    """Render a job's streamed events as a live progress bar (steps and ETA when the job counts steps,
    its progress fraction otherwise), with the latest value of `metric` (e.g. loss) beside it.
    On stderr by default, so --json output on stdout stays clean."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, disable=quiet) as bar:
        task = bar.add_task(label or "queued", total=1.0, metric="")
        for event in events:
            message = (event.message or "working")[:70]
            update: dict[str, object] = {"description": f"{label}: {message}" if label else message}
            if event.total_steps:
                update.update(total=event.total_steps, completed=event.step)
            else:
                update.update(total=1.0, completed=event.progress)
            if metric in event.metrics:
                update["metric"] = f"{metric} {event.metrics[metric]:.4f}"
            bar.update(task, **update)


def follow_and_get(job: JobHandle, **follow: Any) -> common_pb2.Job:
    """Follow a job of any job-running service with `follow_job`'s progress bar, then return its final
    record (whatever its state: the caller reports a failure its own way)."""
    follow_job(job.watch(), **follow)
    return job.finished(check=False)


def comparison_table(report: optimization_pb2.EvaluationReport) -> Table:
    """An evaluation report's comparison table: `tutorforge evaluate`, `train --benchmark` and the demo."""
    header, rows = comparison_rows(report.targets)
    table = Table(*header, title=f"evaluation {report.evaluation_id} on {report.dataset}")
    for row in rows:
        table.add_row(*row)
    return table
