"""The evaluation report: JSON (everything), Markdown (comparison tables, sample replies) and PNG charts
(scores per target, score per subject), rendered here and kept in the artifact store by
`artifacts/reports.py` (`evaluations/<id>/`)."""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tutorforge.artifacts import reports
from tutorforge.artifacts.reports import COLUMNS, comparison_rows
from tutorforge.artifacts.reports import figure as figure_of
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.optimization.evaluation import TargetMetrics

SCORE_CHART = "charts/scores_per_target.png"
SUBJECT_CHART = "charts/score_per_subject.png"
_SAMPLES_PER_TARGET = 3


@dataclass
class EvaluationReport:
    evaluation_id: str
    dataset: str
    dataset_version: str
    weights: dict[str, float]
    targets: list[TargetMetrics]
    # Per target spec: every example's reply, score and latency.
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    # Artifact-store keys: "json", "markdown", "charts" (list).
    files: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [target.to_json() for target in self.targets]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationReport:
        return cls(**{**data, "targets": [TargetMetrics.from_json(item) for item in data["targets"]]})


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: EvaluationReport) -> str:
    header, rows = comparison_rows(report.targets)
    subjects = sorted({subject for t in report.targets for subject in t.score_per_subject})
    subject_rows = [
        [s, *(f"{t.score_per_subject.get(s, 0.0):.3f}" for t in report.targets)] for s in subjects
    ]
    weights = ", ".join(f"{name} {value:g}" for name, value in report.weights.items())
    parts = [
        f"# Evaluation {report.evaluation_id}",
        "",
        (
            f"Turns: `{report.dataset}` version `{report.dataset_version}`, "
            f"{report.targets[0].examples if report.targets else 0} per target, answered through the tutor chat. "
            f"Every figure is a mean with its 95% bootstrap interval. Metric weights: {weights}."
        ),
        "",
        "## Comparison",
        "",
        _table(header, rows),
        "",
        "## Score per subject",
        "",
        _table(["subject", *(t.target for t in report.targets)], subject_rows),
        "",
        "## Charts",
        "",
        f"![scores per target]({SCORE_CHART})",
        "",
        f"![score per subject]({SUBJECT_CHART})",
        "",
        "## Sample replies",
    ]
    for target in report.targets:
        parts += ["", f"### {target.target}"]
        for example in report.examples.get(target.target, [])[:_SAMPLES_PER_TARGET]:
            reply = example["error"] or example["response"]
            score = (example.get("score") or {}).get("score", 0.0)
            cited = ", ".join(f"{c['tag']} {c['document_id']}" for c in example.get("citations", []))
            parts += [
                "",
                f"- **Student:** {_one_line(example['query'])}",
                f"  **Reply** (score {score:.2f}; passages: {cited or 'none'}): {_one_line(reply)}",
            ]
    return "\n".join(parts) + "\n"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def render_charts(report: EvaluationReport) -> dict[str, bytes]:
    """PNG bytes by relative path: each figure per target with its 95% interval as an error bar. Uses
    matplotlib's Agg canvas directly (no GUI, no global backend switch)."""
    import numpy as np
    from matplotlib.figure import Figure

    names = [t.target for t in report.targets]
    shown = [(column, name) for column, name, _ in COLUMNS if name != "mean_words"]
    figure = Figure(figsize=(max(7.0, 1.2 * len(shown) + 2), 4.4))
    axes = figure.add_subplot()
    x = np.arange(len(shown))
    width = 0.8 / max(1, len(names))
    for index, target in enumerate(report.targets):
        values = [figure_of(target, name) for _, name in shown]
        means = [mean for mean, _, _ in values]
        errors = [[mean - low for mean, low, _ in values], [high - mean for mean, _, high in values]]
        axes.bar(x + index * width - 0.4 + width / 2, means, width, yerr=errors, capsize=2, label=target.target)
    axes.set_xticks(x, [column for column, _ in shown], rotation=20)
    axes.set_ylim(0, 1)
    axes.set_ylabel("mean (0–1), 95% interval")
    axes.set_title(f"Tutor quality per target ({report.targets[0].examples if report.targets else 0} turns)")
    axes.legend(fontsize="small")
    charts = {SCORE_CHART: _png(figure)}

    subjects = sorted({subject for t in report.targets for subject in t.score_per_subject})
    figure = Figure(figsize=(max(6.0, 0.9 * len(subjects) * max(1, len(names)) + 2), 4.2))
    axes = figure.add_subplot()
    x = np.arange(len(subjects))
    for index, target in enumerate(report.targets):
        values = [target.score_per_subject.get(subject, 0.0) for subject in subjects]
        axes.bar(x + index * width - 0.4 + width / 2, values, width, label=target.target)
    axes.set_xticks(x, subjects, rotation=20)
    axes.set_ylim(0, 1)
    axes.set_ylabel("pedagogical score")
    axes.set_title("Score per subject")
    axes.legend(fontsize="small")
    charts[SUBJECT_CHART] = _png(figure)
    return charts


def save_report(store: ArtifactStore, report: EvaluationReport) -> EvaluationReport:
    charts = render_charts(report)
    report.files = reports.report_layout(report.evaluation_id, charts)
    reports.write_report(store, report.evaluation_id, report.to_json(), render_markdown(report), charts)
    return report


def load_report(store: ArtifactStore, evaluation_id: str) -> EvaluationReport:
    return EvaluationReport.from_json(reports.read_report(store, evaluation_id))
