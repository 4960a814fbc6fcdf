"""The `tutorforge` command line: `serve`, `demo`, and a client command group per service."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from tutorforge.core.logs import configure_logging
from tutorforge.core.settings import SERVICE_NAMES, Settings

app = typer.Typer(
    name="tutorforge",
    help="Turn teaching material into Socratic tutor models and serve them to chatbots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def serve(
    services: Annotated[Optional[list[str]], typer.Argument(help=f"Services to host: {', '.join(SERVICE_NAMES)} or all.")] = None,
    port: Annotated[Optional[int], typer.Option(help="gRPC port (default from settings, 50051).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (0.0.0.0 in a pod).")] = None,
    store: Annotated[Optional[str], typer.Option(help="Artifact store: a local folder or an fsspec URL.")] = None,
    http_port: Annotated[Optional[int], typer.Option("--http-port", help="Also serve the OpenAI-compatible HTTP API on this port.")] = None,
    metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="Serve Prometheus metrics at /metrics on this port.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve even if a configured API token is empty (auth off; laptops only).")] = False,
) -> None:
    """Run a gRPC server hosting the given services until SIGTERM/SIGINT (then drain in-flight calls)."""
    from tutorforge.core.server import serve_forever

    settings = Settings()
    if store:
        settings.store = store
    if host:
        settings.server.host = host
    if http_port is not None:
        settings.server.http_port = http_port
    if insecure:
        settings.server.insecure = True
    if metrics_port is not None:
        settings.server.metrics_port = metrics_port
    configure_logging(settings.log_level, settings.log_json)
    serve_forever(settings, services or ["all"], port)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's store and caches.")] = Path("demo-output"),
    port: Annotated[int, typer.Option(help="gRPC port of the embedded server (0 = any free port).")] = 0,
) -> None:
    """The embedded end-to-end demo: every service in this process, the whole pipeline on sample material."""
    from tutorforge.pipeline.demo import run_demo

    run_demo(workdir, port)


def _add_service_commands() -> None:
    # Each service contributes its client commands through `tutorforge.<service>.cli.register(app)`.
    for name in SERVICE_NAMES:
        module_name = f"tutorforge.{name}.cli"
        if importlib.util.find_spec(f"tutorforge.{name}") and importlib.util.find_spec(module_name):
            importlib.import_module(module_name).register(app)


_add_service_commands()
# `tutorforge pipeline …`: the pipeline package above the services (YAML specs through the client SDK).
importlib.import_module("tutorforge.pipeline.cli").register(app)
# `tutorforge adapters deploy`: the cluster rollout (tutorforge.deploy) joins inference's `adapters` group.
importlib.import_module("tutorforge.deploy.cli").register(app)


def main() -> None:
    app()
