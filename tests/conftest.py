"""Shared fixtures: real servers on loopback ports, with an isolated store per test."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tutorforge.core.client import open_channel  # noqa: E402
from tutorforge.core.server import RunningServer, start_server  # noqa: E402
from tutorforge.core.settings import Settings  # noqa: E402
from tooling import in_ci  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Converted model weights are kept between runs: converting the GGUF takes ~20 s.
MODEL_CACHE = REPO / ".cache" / "models"


def make_settings(root: Path, **changes: object) -> Settings:
    settings = Settings()
    settings.home = root
    settings.store = str(root / "store")
    settings.models.cache_dir = MODEL_CACHE
    settings.retrieval.edge_path = root / "qdrant"
    settings.server.shutdown_grace_seconds = 2
    for dotted, value in changes.items():
        target = settings
        *parents, leaf = dotted.split("__")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[RunningServer, grpc.Channel]]]:
    """Start a real server hosting `services` on a free loopback port; returns it and a channel.

    Keyword arguments override settings with `section__field=value` (e.g. server__api_token="t")."""
    started: list[tuple[RunningServer, grpc.Channel]] = []

    def _serve(*services: str, settings: Settings | None = None, token: str | None = None, **changes: object):
        config = settings or make_settings(tmp_path, **changes)
        running = start_server(config, services or ("all",), port=0)
        channel = open_channel(running.address, token)
        started.append((running, channel))
        return running, channel

    yield _serve
    for running, channel in started:
        channel.close()
        running.stop(grace=1)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under CI=true a skip is a failure with its reason: a green CI run must mean every test ran."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {_skip_reason(report)}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What was skipped and why, grouped by reason (a skipped real tool must not go unnoticed)."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if not hasattr(report, "wasxfail")]
    if not skipped:
        return
    reasons = Counter(_skip_reason(report) for report in skipped)
    terminalreporter.section(f"{len(skipped)} skipped, and why")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:5d}  {reason}")
