"""One real server with every service (real model, real Qdrant engine, real gRPC and HTTP on loopback)
per test module, with its store path for before/after snapshots."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tutorforge.core.client import open_channel
from tutorforge.core.server import RunningServer, start_server

from tests.conftest import make_settings
from tests.reliability.reliability_helpers import free_port


@dataclass
class Served:
    server: RunningServer
    channel: grpc.Channel
    store: Path
    http: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("reliability")
    port = free_port()
    # Few tokens per reply: valid chat requests among the probes must not run long generations.
    settings = make_settings(root, server__http_port=port, inference__default_max_tokens=4)
    running = start_server(settings, ("all",), port=0)
    channel = open_channel(running.address)
    yield Served(running, channel, Path(settings.store), f"http://127.0.0.1:{port}")
    channel.close()
    running.stop(grace=1)
