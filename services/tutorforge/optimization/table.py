"""The comparison table of an evaluation, without heavy imports (the CLI uses it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
