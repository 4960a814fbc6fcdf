"""Bundled sample data: teaching material, starter dialogues, instructions, scenarios and evaluation items.

Everything here is plain data read from the installed package; see README.md in this folder for the formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLES_DIR = Path(__file__).parent


@dataclass(frozen=True)
class MaterialDocument:
    """One file of `material/` with the metadata to ingest it under (see material/manifest.json)."""

    path: Path
    document_id: str
    title: str
    source: str
    category: str
    topic: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def grade_level(self) -> str:
        return self.extra.get("grade_level", "")


def material_dir() -> Path:
    return SAMPLES_DIR / "material"


def material_documents() -> list[MaterialDocument]:
    """The documents listed in material/manifest.json, in manifest order."""
    manifest = json.loads((material_dir() / "manifest.json").read_text(encoding="utf-8"))
    return [
        MaterialDocument(
            path=material_dir() / entry["file"],
            document_id=entry["document_id"],
            title=entry["title"],
            source=entry["source"],
            category=entry["category"],
            topic=entry["topic"],
            extra=dict(entry.get("extra", {})),
        )
        for entry in manifest["documents"]
    ]


def seeds_dir() -> Path:
    """Lesson cards (one JSONL file per subject) that the datasets seed source composes into dialogues."""
    return SAMPLES_DIR / "seeds"


def retrieval_queries() -> Path:
    """JSONL of {"query", "relevant": [document_id...]}."""
    return SAMPLES_DIR / "retrieval_queries.jsonl"


def starter_dialogues() -> Path:
    """JSONL of ChatML Socratic dialogues: {"conversations": [...], "metadata": {...}}."""
    return SAMPLES_DIR / "dialogues" / "starter.jsonl"


def openai_dialogues() -> Path:
    """JSONL in OpenAI fine-tuning form: {"messages": [...], "metadata": {...}}."""
    return SAMPLES_DIR / "dialogues" / "openai_format.jsonl"


def array_dialogues() -> Path:
    """A JSON array of ChatML dialogues (format-detection tests)."""
    return SAMPLES_DIR / "dialogues" / "array_format.json"


def evaluation_chatml() -> Path:
    """The evaluation items as ChatML (system turn carries the reference passage)."""
    return SAMPLES_DIR / "dialogues" / "evaluation_chatml.jsonl"


def instructions() -> Path:
    """JSONL of {"instruction", "context", "response", "metadata"}."""
    return SAMPLES_DIR / "instructions" / "instructions.jsonl"


def teacher_scenarios() -> Path:
    """JSONL of {"name", "description", "expected_response", "category"}."""
    return SAMPLES_DIR / "scenarios" / "teacher_training.jsonl"


def benchmark_turns() -> Path:
    """JSONL of the tutor benchmark's held-out student turns (never trained on)."""
    return SAMPLES_DIR / "benchmark" / "tutor_turns.jsonl"


def evaluation_items() -> Path:
    """JSONL of held-out {"query", "context", "metadata", "reference"} items."""
    return SAMPLES_DIR / "evaluation.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, skipping blank lines."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
