"""The retrieval CLI commands against a running server (typer's CliRunner in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from retrieval_helpers import PHOTOSYNTHESIS, ROME, VOLCANOES
from typer.testing import CliRunner

from tutorforge.retrieval.cli import register


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "material"
    (folder / "nested").mkdir(parents=True)
    (folder / "photosynthesis.md").write_text(PHOTOSYNTHESIS)
    (folder / "nested" / "volcanoes.txt").write_text(VOLCANOES)
    (folder / "ignored.csv").write_text("a,b")
    return folder


def test_ingest_search_documents_stats(cli, retrieval, files: Path, tmp_path: Path):
    _, running = retrieval()
    runner = CliRunner()
    address = ["--address", running.address]

    result = runner.invoke(cli, ["ingest", str(files), "--category", "science", "--meta", "grade=6", "--chunk-size", "64", *address])
    assert result.exit_code == 0, result.output
    assert "photosynthesis" in result.output and "created" in result.output

    result = runner.invoke(cli, ["ingest", str(files), "--category", "science", "--meta", "grade=6", "--chunk-size", "64", "--json", *address])
    assert result.exit_code == 0, result.output
    outcomes = {r["document_id"]: r["outcome"] for r in json.loads(result.stdout)["results"]}
    assert outcomes == {"photosynthesis": "INGEST_OUTCOME_UNCHANGED", "volcanoes": "INGEST_OUTCOME_UNCHANGED"}

    result = runner.invoke(cli, ["search", "what erupts from a volcano", "--limit", "2", "--filter", "grade>=6", "--json", *address])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["document_id"] == "volcanoes" and hits[0]["metadata"]["source"] == "volcanoes.txt" and len(hits) <= 2

    result = runner.invoke(cli, ["search", "chlorophyll", "--mode", "sparse", *address])
    assert result.exit_code == 0 and "photosynthesis #" in result.output and "photosynthesis.md" in result.output

    result = runner.invoke(cli, ["documents", "list", "--filter", "category=science|history", "--json", *address])
    assert [d["document_id"] for d in json.loads(result.stdout)["documents"]] == ["photosynthesis", "volcanoes"]
    result = runner.invoke(cli, ["documents", "show", "volcanoes", "--chunks", *address])
    assert result.exit_code == 0 and "volcanoes.txt" in result.output and "#0" in result.output
    result = runner.invoke(cli, ["stats", "--json", *address])
    stats = json.loads(result.stdout)
    assert stats["documents"] == "2" and stats["store_backend"] == "edge"
    result = runner.invoke(cli, ["documents", "delete", "volcanoes", *address])
    assert result.exit_code == 0 and "deleted volcanoes" in result.output
    assert "1 documents" in runner.invoke(cli, ["stats", *address]).output


def test_failures_exit_non_zero_with_the_servers_message(cli, retrieval, tmp_path: Path):
    _, running = retrieval()
    runner = CliRunner()
    address = ["--address", running.address]

    result = runner.invoke(cli, ["search", "rome", "--filter", "colour=red", *address])
    assert result.exit_code != 0 and "INVALID_ARGUMENT" in result.output and "colour" in result.output
    result = runner.invoke(cli, ["documents", "show", "nope", *address])
    assert result.exit_code != 0 and "NOT_FOUND" in result.output and "nope" in result.output

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe broken")
    result = runner.invoke(cli, ["ingest", str(bad), *address])
    assert result.exit_code != 0 and "UTF-8" in result.output
    good = tmp_path / "rome.txt"
    good.write_text(ROME)
    result = runner.invoke(cli, ["ingest", str(bad), str(good), "--chunk-size", "64", "--json", *address])
    assert result.exit_code == 1
    assert [r["outcome"] for r in json.loads(result.stdout)["results"]] == ["INGEST_OUTCOME_FAILED", "INGEST_OUTCOME_CREATED"]

    result = runner.invoke(cli, ["search", "x", "--address", "127.0.0.1:1"])
    assert result.exit_code != 0 and "cannot reach" in result.output
