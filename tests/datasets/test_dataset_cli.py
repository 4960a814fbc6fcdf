"""`tutorforge dataset …` through typer's CliRunner against a real running server."""

from __future__ import annotations

import json

from dataset_helpers import FIXTURES, dialogue, jsonl
from typer.testing import CliRunner

from tutorforge.cli import app

runner = CliRunner()


def invoke(address: str, *args: str):
    return runner.invoke(app, ["dataset", *args, "--address", address])


def test_build_show_list_export_validate_delete(serve, tmp_path):
    running, _ = serve("datasets")
    address = running.address
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl([dialogue("Why do leaves fall?", "What changes in autumn?", subject="science"),
                           dialogue("a lonely question")]))
    inputs = [arg for name in ("dialogues.jsonl", "openai.json", "instructions.jsonl", "scenarios.jsonl")
              for arg in ("--input", str(FIXTURES / name))]
    result = invoke(address, "build", "starter", *inputs, "--input", str(bad), "--validation-fraction", "0.2", "--json")
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    dataset = built["dataset"]
    assert dataset["stats"]["records"] == 17
    assert dataset["manifest"]["dropped"] == [
        {"source": "bad.jsonl", "index": 1, "reason": "the conversation must end with an assistant turn"}
    ]
    assert [s["format"] for s in dataset["manifest"]["sources"]] == [
        "RECORD_FORMAT_CHATML", "RECORD_FORMAT_OPENAI", "RECORD_FORMAT_INSTRUCTION", "RECORD_FORMAT_SCENARIO", "RECORD_FORMAT_CHATML"]
    version = dataset["version"]

    shown = invoke(address, "show", "starter")
    assert shown.exit_code == 0 and version in shown.stdout and "bad.jsonl" in shown.stdout

    listed = json.loads(invoke(address, "list", "--json").stdout)
    assert [(d["name"], d["version"]) for d in listed] == [("starter", version)]

    exported = invoke(address, "export", "starter")
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == 17 and all("conversations" in line for line in lines)
    train = invoke(address, "export", "starter", "--split", "train", "--format", "openai").stdout.splitlines()
    assert len(train) == dataset["stats"]["train_records"] and all(list(json.loads(l)) == ["messages"] for l in train)

    validated = invoke(address, "validate", str(bad), "--json")
    assert validated.exit_code == 1
    assert json.loads(validated.stdout)["issues"][0]["index"] == 1

    deleted = invoke(address, "delete", "starter")
    assert deleted.exit_code == 0 and version in deleted.stdout
    missing = invoke(address, "show", "starter")
    assert missing.exit_code == 2 and "NOT_FOUND" in missing.output


def test_bad_inputs_exit_non_zero_with_the_reason(serve, tmp_path):
    running, _ = serve("datasets")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"conversations": [')
    result = invoke(running.address, "build", "x", "--input", str(broken))
    assert result.exit_code == 2 and "INVALID_ARGUMENT" in result.output and "broken.json" in result.output
    strict_file = tmp_path / "s.jsonl"
    strict_file.write_bytes(jsonl([dialogue("question one here", "Why?"), dialogue("unanswered")]))
    result = invoke(running.address, "build", "strict", "--input", str(strict_file), "--strict")
    assert result.exit_code == 1 and "strict mode" in result.output
    result = invoke(running.address, "build", "../x", "--input", str(strict_file))
    assert result.exit_code == 2 and "not valid" in result.output
    assert list(running.runtime.store.walk("datasets")) == []
