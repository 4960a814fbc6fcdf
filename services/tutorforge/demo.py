"""`tutorforge demo`: start every service embedded in this process (Qdrant's engine in process, local
Ray, in-process model) and run the whole pipeline on the bundled sample material, stage by stage."""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.rule import Rule

from tutorforge.core.cli_support import connect
from tutorforge.core.logs import configure_logging
from tutorforge.core.server import start_server
from tutorforge.core.settings import Settings

# Stages in pipeline order; each module exposes `run(context: DemoContext) -> None`.
STAGES = (
    "tutorforge.retrieval.demo",
    "tutorforge.datasets.demo",
    "tutorforge.training.demo",
    "tutorforge.inference.demo",
    "tutorforge.optimization.demo",
)


@dataclass
class DemoContext:
    channel: grpc.Channel
    address: str
    settings: Settings
    workdir: Path
    console: Console
    # What earlier stages produced for later ones (dataset name, adapter name, ...).
    results: dict[str, Any] = field(default_factory=dict)


def demo_settings(workdir: Path) -> Settings:
    workdir = workdir.resolve()
    settings = Settings()
    settings.home = workdir
    settings.store = str(workdir / "store")
    settings.retrieval.edge_path = workdir / "qdrant"
    settings.log_level = "WARNING"
    return settings


def run_demo(workdir: Path, port: int = 0) -> DemoContext:
    # Logs and CI have no terminal: rich would fall back to 80 columns and truncate the report tables.
    console = Console(width=None if sys.stdout.isatty() else 160)
    settings = demo_settings(workdir)
    configure_logging(settings.log_level, as_json=False)
    started = time.perf_counter()
    running = start_server(settings, ["all"], port)
    context = DemoContext(
        channel=connect(running.address),
        address=running.address,
        settings=running.runtime.settings,
        workdir=workdir.resolve(),
        console=console,
    )
    console.print(f"[bold]tutorforge demo[/] — services {', '.join(running.services)} on {running.address}, store {settings.store}")
    try:
        for module_name in STAGES:
            if importlib.util.find_spec(module_name) is None:
                continue
            module = importlib.import_module(module_name)
            console.print(Rule(f"[bold cyan]{module.TITLE}"))
            stage_started = time.perf_counter()
            module.run(context)
            console.print(f"[dim]{module.TITLE}: {time.perf_counter() - stage_started:.1f} s[/]")
    finally:
        context.channel.close()
        running.stop(grace=5)
    console.print(Rule(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s"))
    return context
