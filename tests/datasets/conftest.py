"""Dataset test fixtures: the real SmolLM2 tokenizer (loaded once) and an isolated repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from tutorforge.artifacts.datasets import DatasetRepository
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.settings import Settings
from tutorforge.datasets.validation import TokenCounter, chat_token_counter

MODEL_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "models"


@pytest.fixture(scope="session")
def token_counter() -> tuple[TokenCounter, str]:
    settings = Settings()
    settings.models.cache_dir = MODEL_CACHE
    return chat_token_counter(settings.models)


@pytest.fixture
def repository(tmp_path: Path) -> DatasetRepository:
    return DatasetRepository(ArtifactStore(str(tmp_path / "store")))
