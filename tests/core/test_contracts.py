"""The generated stubs match protos/ and the contracts pass buf lint."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tooling import missing_tool

REPO = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen_protos.py"), "--out", str(tmp_path)], check=True)
    fresh = tmp_path / "tutorforge" / "v1"
    committed = REPO / "services" / "tutorforge" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"})
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch + errors}: run python scripts/gen_protos.py"


def test_every_service_is_in_the_contracts() -> None:
    from tutorforge.v1 import datasets_pb2, inference_pb2, optimization_pb2, retrieval_pb2, training_pb2

    found = {
        service.full_name
        for module in (datasets_pb2, inference_pb2, optimization_pb2, retrieval_pb2, training_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    assert found == {f"tutorforge.v1.{n}" for n in
                     ("RetrievalService", "DatasetService", "TrainingService", "OptimizationService", "InferenceService")}


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf") or next(
        (str(p) for p in [REPO / "tools" / "node_modules" / ".bin" / "buf"] if p.exists()), None
    )
    if buf is None:
        missing_tool("buf is not installed: scripts/test.sh installs it from npm (@bufbuild/buf)")
    result = subprocess.run([buf, "lint"], cwd=REPO / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
