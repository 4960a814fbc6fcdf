"""Training test fixtures: dataset versions saved through the real DatasetRepository from the starter
dialogues (services/tutorforge/samples/dialogues/starter.jsonl)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.store import ArtifactStore

STARTER = (
    Path(__file__).resolve().parents[2]
    / "services"
    / "tutorforge"
    / "samples"
    / "dialogues"
    / "starter.jsonl"
)


@pytest.fixture
def starter_records() -> list[dict[str, Any]]:
    if not STARTER.exists():
        pytest.fail(f"{STARTER} is missing: the starter dialogues ship with tutorforge", pytrace=False)
    return [json.loads(line) for line in STARTER.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def save_dataset() -> Callable[..., DatasetInfo]:
    """Save a dataset version exactly as the datasets service does: `save(store, name, train, validation)`."""

    def _save(
        store: ArtifactStore, name: str, train: list[dict[str, Any]], validation: list[dict[str, Any]]
    ) -> DatasetInfo:
        digest = hashlib.sha256(json.dumps([train, validation], sort_keys=True).encode()).hexdigest()
        info = DatasetInfo(
            name=name,
            version=digest[:12],
            content_hash=digest,
            description="test fixture",
            stats={"records": len(train) + len(validation)},
        )
        return DatasetRepository(store).save(info, {"train": train, "validation": validation})

    return _save


@pytest.fixture
def starter_dataset(starter_records, save_dataset) -> Callable[..., DatasetInfo]:
    """`starter_dataset(store, name="starter", train=24, validation=6)`: a slice of the starter dialogues."""

    def _make(
        store: ArtifactStore, name: str = "starter", train: int = 24, validation: int = 6
    ) -> DatasetInfo:
        return save_dataset(store, name, starter_records[:train], starter_records[train : train + validation])

    return _make
