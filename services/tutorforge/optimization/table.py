"""The comparison table of an evaluation, without heavy imports (the CLI uses it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def comparison_rows(targets: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison table (header, rows) of domain `TargetMetrics` or their proto (same field names),
    for the Markdown report, the CLI and the demo."""
    header = [
        "target",
        "score",
        "context",
        "elements",
        "length",
        "socratic",
        "question rate",
        "reveal rate",
        "similarity",
        "latency s",
        "errors",
    ]
    rows = [
        [
            t.target,
            f"{t.pedagogical_score:.3f}",
            f"{t.context_usage:.3f}",
            f"{t.pedagogical_elements:.3f}",
            f"{t.length_ratio:.3f}",
            f"{t.socratic:.3f}",
            f"{t.question_rate:.0%}",
            f"{t.answer_reveal_rate:.0%}",
            f"{t.similarity.mean:.3f} ± {t.similarity.std:.3f}",
            f"{t.mean_latency_seconds:.1f}",
            f"{t.errors}/{t.examples}",
        ]
        for t in targets
    ]
    return header, rows
