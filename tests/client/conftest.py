"""Client SDK fixtures: one real server hosting every service (real gRPC on loopback, real model, the
real Qdrant engine) per test module, reached only through tutorforge.client."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The repository root, so that `tests.conftest` imports under plain `pytest` as under `python -m pytest`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tutorforge.client import Tutorforge
from tutorforge.core.server import RunningServer, start_server

from tests.conftest import make_settings

# Short chunks: embedding is the slow part of ingestion on 2 cores.
SMALL_CHUNKS = {"retrieval__chunk_size_tokens": 48, "retrieval__chunk_overlap_tokens": 12}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(make_settings(tmp_path_factory.mktemp("client"), **SMALL_CHUNKS), ("all",), port=0)
    yield running
    running.stop(grace=1)


@pytest.fixture
def tf(server: RunningServer) -> Iterator[Tutorforge]:
    with Tutorforge(server.address) as client:
        yield client
