"""Helpers shared by the dataset tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tutorforge.artifacts.store import ArtifactStore

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def jsonl(items: list[Any]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def dialogue(*turns: str, subject: str = "math", system: str | None = None) -> dict[str, Any]:
    roles = ("user", "assistant")
    conversation = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    if system:
        conversation.insert(0, {"role": "system", "content": system})
    return {"conversations": conversation, "metadata": {"subject": subject}}


def store_snapshot(store: ArtifactStore) -> dict[str, bytes]:
    """Every dataset file and its bytes, to assert that a failed call changed nothing."""
    return {key: store.read_bytes(key) for key in store.walk("datasets")}
