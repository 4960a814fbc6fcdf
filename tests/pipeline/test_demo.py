"""`tutorforge demo`'s first stage on its embedded server, through the pipeline package and the SDK: the
bundled material ingested and searched with cited sources, shown as the demo shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tutorforge import samples
from tutorforge.pipeline.demo import STAGES, run_demo

pytestmark = pytest.mark.slow


def test_the_demos_retrieval_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = run_demo(tmp_path / "demo", stages_to_run=1)
    out = capsys.readouterr().out
    material = context.results.material
    documents = len(samples.material_documents())
    assert material.documents == documents and not material.failed and material.chunks_written > documents
    assert STAGES[0][0] in out and f"{documents} documents, {material.chunks_written} chunks in the edge store" in out
    # The example searches print their hits citing document and chunk: the fractions question finds the
    # fractions lesson first, the leaf question the photosynthesis one.
    after_fractions = out.split("Why can't I add the denominators when adding fractions?")[1]
    assert after_fractions.split("\n")[1].strip().startswith("1. math_fractions #")
    after_leaf = out.split("What happens to light energy inside a leaf?")[1]
    assert after_leaf.split("\n")[1].strip().startswith("1. biology_photosynthesis #")
    assert context.results.dataset is None and "demo finished" in out
