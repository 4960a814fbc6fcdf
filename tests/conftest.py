"""Shared fixtures: real servers on loopback ports, with an isolated store per test."""

from __future__ import annotations

import os
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
