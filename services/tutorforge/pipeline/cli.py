"""`tutorforge pipeline validate|run SPEC.yaml`: a pipeline spec checked, or run on a server (or on an
embedded one, as the demo does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tutorforge.core.cli_support import (
    DEFAULT_ADDRESS,
    AddressOption,
    JsonOption,
    connect,
    console,
    rpc_errors,
)

pipeline_app = typer.Typer(name="pipeline", help="Pipelines from YAML specs: material → dataset → train → optimize → evaluate → publish.",
                           no_args_is_help=True)

SpecArgument = Annotated[Path, typer.Argument(help="Pipeline spec (YAML); see docs/client.md and samples/pipelines/.")]


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app)


@pipeline_app.command("validate")
def validate(spec: SpecArgument) -> None:
    """Check a spec (fields, stage inputs, files) without running anything."""
    from tutorforge.pipeline.spec import load_spec

    with rpc_errors():
        loaded = load_spec(spec)
    sections = [name for name in ("material", "dataset", "train", "optimize", "evaluate", "publish") if getattr(loaded, name)]
    console.print(f"{spec}: valid; stages {' → '.join(sections) or '(none)'}")


@pipeline_app.command("run")
def run(
    spec: SpecArgument,
    address: AddressOption = DEFAULT_ADDRESS,
    embedded: Annotated[bool, typer.Option("--embedded", help="Start every service in this process instead of calling --address.")] = False,
    workdir: Annotated[Path, typer.Option(help="With --embedded: folder of the store and caches.")] = Path("pipeline-output"),
    json_output: JsonOption = False,
) -> None:
    """Run a spec's stages in order through the client SDK; prints each stage's result (or all as JSON)."""
    from tutorforge.pipeline.runner import as_dict, run_spec
    from tutorforge.pipeline.spec import load_spec

    running = None
    try:
        with rpc_errors():
            loaded = load_spec(spec)
            if embedded:
                from tutorforge.core.server import start_server
                from tutorforge.pipeline.demo import demo_settings

                running = start_server(demo_settings(workdir), ["all"], 0)
                address = running.address
            with connect(address) as tf:
                result = run_spec(loaded, tf, quiet=json_output)
    finally:
        if running is not None:
            running.stop(grace=5)
    if json_output:
        sys.stdout.write(json.dumps(as_dict(result), indent=2, ensure_ascii=False) + "\n")
