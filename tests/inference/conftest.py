"""Inference fixtures: one real server (real model, real gRPC) per test module, and two tiny adapters
trained once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import sys

import grpc
import pytest
from inference_helpers import ADAPTERS, train_tiny_adapter

# The repository root, so that `tests.conftest` imports under plain `pytest` as under `python -m pytest`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conftest import MODEL_CACHE, make_settings  # noqa: E402
from tutorforge.core.client import open_channel  # noqa: E402
from tutorforge.core.server import RunningServer, start_server  # noqa: E402
from tutorforge.core.settings import ModelSettings  # noqa: E402

ServerFactory = Callable[..., tuple[RunningServer, grpc.Channel]]


@pytest.fixture(scope="module")
def module_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like `serve`, but the servers live for the whole test module (loading the model once)."""
    started: list[tuple[RunningServer, grpc.Channel]] = []

    def _serve(*services: str, **changes: object) -> tuple[RunningServer, grpc.Channel]:
        root = tmp_path_factory.mktemp("inference")
        running = start_server(make_settings(root, **changes), services or ("inference",), port=0)
        channel = open_channel(running.address)
        started.append((running, channel))
        return running, channel

    yield _serve
    for running, channel in started:
        channel.close()
        running.stop(grace=1)


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA adapters of different ranks and target modules, trained in a few steps."""
    root = tmp_path_factory.mktemp("adapters")
    models = ModelSettings(cache_dir=MODEL_CACHE)
    return {
        name: train_tiny_adapter(models, root / name, rank, targets, text)
        for name, (rank, targets, text) in ADAPTERS.items()
    }
