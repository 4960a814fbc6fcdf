"""`tutorforge pipeline run --embedded`: every service started in the command's own process (as the demo
does), a two-stage spec (material → dataset) run on it, its typed results printed as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from tutorforge.cli import app
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conftest import MODEL_CACHE

FIXTURES = Path(__file__).resolve().parents[1] / "datasets" / "fixtures"


def test_material_and_dataset_on_an_embedded_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUTORFORGE_MODELS__CACHE_DIR", str(MODEL_CACHE))  # the converted model, kept between runs
    (tmp_path / "leaves.md").write_text("# Leaves\nChlorophyll in leaves captures light energy for photosynthesis.\n")
    spec = {
        "material": {"paths": ["leaves.md"], "category": "biology"},
        "dataset": {"name": "leaves", "sources": [{"file": str(FIXTURES / "dialogues.jsonl")}], "options": {"validation_fraction": 0.2}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["pipeline", "run", str(tmp_path / "spec.yaml"), "--embedded", "--workdir", str(tmp_path / "work"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["material"]["documents"] == 1 and out["material"]["results"][0]["document_id"]
    stats = out["dataset"]["dataset"]["stats"]
    assert out["dataset"]["version"] and stats["train_records"] + stats["validation_records"] == stats["records"] > 0
    assert out["training"] is None and out["program"] is None
    # The embedded server kept its store in the workdir.
    assert (tmp_path / "work" / "store" / "datasets" / "leaves" / out["dataset"]["version"]).is_dir()
