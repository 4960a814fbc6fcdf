"""A tiny spec run end to end on a real server (real gRPC, real model, local Ray, the Qdrant engine):
material → dataset → train → optimize → evaluate → publish through `tutorforge pipeline run`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from tutorforge.cli import app
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tutorforge.client import Tutorforge
from tutorforge.core.server import start_server

from tests.conftest import make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "datasets" / "fixtures"

pytestmark = pytest.mark.slow


def tiny_spec(folder: Path) -> Path:
    (folder / "fractions.md").write_text(
        "# Adding fractions\nTo add 1/2 and 1/3, rewrite both over the common denominator 6: 3/6 + 2/6 = 5/6.\n"
    )
    spec = {
        "name": "tiny",
        "material": {"paths": ["fractions.md"], "category": "mathematics", "chunk_size_tokens": 64, "chunk_overlap_tokens": 8},
        "dataset": {"name": "tiny-socratic", "sources": [{"file": str(FIXTURES / "dialogues.jsonl")}],
                    "options": {"seed": 0, "validation_fraction": 0.3}},
        "train": {"adapter": "tiny-tutor", "num_workers": 1,
                  "arguments": {"max_steps": 2, "batch_size": 2, "max_seq_length": 128, "eval_steps": 0}},
        "optimize": {"program": "tiny-tutor", "budget": {"max_labeled_demos": 1, "max_train_examples": 2,
                                                         "max_validation_examples": 2, "threads": 2}, "max_tokens": 8},
        "evaluate": {"targets": ["base", "adapter", "program"], "max_examples": 2, "max_tokens": 8, "threads": 2,
                     "report_dir": str(folder / "report")},
        "publish": {"force": True},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_tiny_spec_runs_every_stage_through_the_cli(tmp_path: Path) -> None:
    running = start_server(make_settings(tmp_path / "server"), ("all",), port=0)
    try:
        result = CliRunner().invoke(app, ["pipeline", "run", str(tiny_spec(tmp_path)), "--address", running.address, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["material"]["documents"] == 1 and out["material"]["chunks_written"] >= 1 and not out["material"]["failed"]
        assert out["dataset"]["name"] == "tiny-socratic" and out["dataset"]["dataset"]["stats"]["validation_records"] >= 2
        adapter = out["training"]["adapter"]
        assert adapter == "tiny-tutor" and out["training"]["adapter_version"] and "final_loss" in out["training"]["metrics"]
        assert out["program"]["name"] == "tiny-tutor" and out["program"]["program"]["adapter"] == adapter
        targets = [t["target"] for t in out["evaluation"]["report"]["targets"]]
        assert targets == ["base", "adapter:tiny-tutor", "program:tiny-tutor"], targets
        assert (tmp_path / "report" / "report.md").is_file()
        promoted = out["publish"]["program"]
        assert out["publish"]["adapter"]["loaded"] and promoted["program"]["version"] == out["program"]["version"] and promoted["reason"]

        # What the pipeline published is what a chatbot now gets.
        with Tutorforge(running.address) as tf:
            served = {a.name: a for a in tf.inference.adapters().adapters}
            assert served[adapter].loaded
            reply = tf.inference.chat("How do I add 1/2 and 1/3?", program="tiny-tutor", max_tokens=4)
            assert reply.summary.adapter == adapter
    finally:
        running.stop(grace=2)
