"""Evaluation reports in the artifact store, and their comparison table (without heavy imports: the CLIs
use it).

Layout: `evaluations/<id>/{report.json, report.md, charts/*.png}`. `report.json` is written last, so a
report without it is an interrupted write and is not found. The optimization service renders reports
(optimization/report.py); this module owns where they live and how they are read back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.names import is_id
from tutorforge.core.validation import echo

PREFIX = "evaluations"

# (column, figure, format): every figure is shown with its 95% interval.
COLUMNS = (
    ("score", "pedagogical_score", ".3f"),
    ("asks question", "question_rate", ".0%"),
    ("reveals answer", "answer_reveal_rate", ".0%"),
    ("cites", "citation_rate", ".0%"),
    ("grounded", "groundedness", ".2f"),
    ("context", "context_usage", ".2f"),
    ("elements", "pedagogical_elements", ".2f"),
    ("length", "length_ratio", ".2f"),
    ("words", "mean_words", ".0f"),
)


def figure(target: Any, name: str) -> tuple[float, float, float]:
    """(mean, low, high) of a figure, from domain `TargetMetrics` (Estimate fields) or their proto (a double
    plus `intervals[name]`)."""
    value = getattr(target, name)
    if hasattr(value, "low"):
        return value.mean, value.low, value.high
    interval = target.intervals[name] if name in target.intervals else None
    return value, (interval.low if interval else value), (interval.high if interval else value)


def cell(target: Any, name: str, spec: str) -> str:
    mean, low, high = figure(target, name)
    return f"{mean:{spec}} [{low:{spec}}–{high:{spec}}]"


def comparison_rows(targets: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison table (header, rows) of domain `TargetMetrics` or their proto (same field names),
    for the Markdown report, the CLI, the benchmark and the demo."""
    header = ["target", *(column for column, _, _ in COLUMNS), "latency s", "errors"]
    rows = [
        [
            t.target,
            *(cell(t, name, spec) for _, name, spec in COLUMNS),
            f"{t.mean_latency_seconds:.1f}",
            f"{t.errors}/{t.examples}",
        ]
        for t in targets
    ]
    return header, rows


def report_folder(evaluation_id: str) -> str:
    return f"{PREFIX}/{evaluation_id}"


def report_layout(evaluation_id: str, charts: Iterable[str]) -> dict[str, Any]:
    """A report's store keys: "json", "markdown", "charts" (list); charts are paths relative to its folder."""
    folder = report_folder(evaluation_id)
    return {
        "json": f"{folder}/report.json",
        "markdown": f"{folder}/report.md",
        "charts": [f"{folder}/{relative}" for relative in charts],
    }


def write_report(
    store: ArtifactStore, evaluation_id: str, document: dict[str, Any], markdown: str, charts: dict[str, bytes]
) -> None:
    """Charts and Markdown first, `report.json` (the document) last."""
    layout = report_layout(evaluation_id, charts)
    for key, data in zip(layout["charts"], charts.values(), strict=True):
        store.write_bytes(key, data)
    store.write_text(layout["markdown"], markdown)
    store.write_json(layout["json"], document)


def read_report(store: ArtifactStore, evaluation_id: str) -> dict[str, Any]:
    """The report document (what `report.json` holds)."""
    if not evaluation_id:
        raise InvalidArgument("evaluation_id is required: give the id of an evaluation run")
    if not is_id(evaluation_id):
        raise NotFound(f"no evaluation {echo(evaluation_id)}")
    key = report_layout(evaluation_id, [])["json"]
    if not store.exists(key):
        raise NotFound(
            f"evaluation {evaluation_id!r} has no report (yet): check the run with GetJob; it is written when the run succeeds"
        )
    return store.read_json(key)


def report_files(store: ArtifactStore, evaluation_id: str, files: dict[str, Any]) -> dict[str, bytes]:
    """A report's files (its `files` layout) by path relative to the report folder, for copying elsewhere."""
    folder = report_folder(evaluation_id)
    keys = [files["json"], files["markdown"], *files["charts"]]
    return {key.removeprefix(folder + "/"): store.read_bytes(key) for key in keys}
