"""The inference CLI through typer's CliRunner against a real server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tutorforge.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def server(module_serve):
    running, _ = module_serve("inference", inference__threads=1)
    return running


def test_generate_streams_and_prints_json(server):
    streamed = runner.invoke(app, ["generate", "The capital of France is", "--max-tokens", "4", "--address", server.address])
    assert streamed.exit_code == 0, streamed.output
    as_json = runner.invoke(app, ["generate", "The capital of France is", "--max-tokens", "4", "--address", server.address, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["summary"]["usage"]["completion_tokens"] <= 4
    assert data["text"] and data["text"] in streamed.stdout


def test_chat_message_one_turn(server):
    result = runner.invoke(
        app, ["chat", "--message", "What is 2 + 2?", "--no-retrieval", "--max-tokens", "8", "--address", server.address, "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["message"]["role"] == "assistant" and data["message"]["content"]
    streamed = runner.invoke(app, ["chat", "-m", "What is 2 + 2?", "--no-retrieval", "--max-tokens", "8", "--address", server.address])
    assert streamed.exit_code == 0 and "tutor>" in streamed.stdout
    assert data["message"]["content"] in streamed.stdout


def test_interactive_chat_answers_each_line_until_an_empty_one(server):
    result = runner.invoke(
        app, ["chat", "--no-retrieval", "--max-tokens", "6", "--address", server.address], input="Hello!\nWhat did I say?\n\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("tutor>") == 2
    assert result.stdout.count("you>") == 3


def test_adapters_add_list_remove(server, tmp_path, tiny_adapters):
    store = server.runtime.settings.store_url
    added = runner.invoke(
        app, ["adapters", "add", str(tiny_adapters["pirate"]), "--name", "pirate", "--subject", "geography",
              "--grade-level", "5", "--teaching-style", "socratic", "--store", store],
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["adapters", "list", "--address", server.address, "--json"])
    adapter = {a["name"]: a for a in json.loads(listed.stdout)["adapters"]}["pirate"]
    assert adapter["metadata"] == {"subject": "geography", "grade_level": "5", "teaching_style": "socratic"}
    assert adapter["registered"] and not adapter["loaded"]

    loaded = runner.invoke(app, ["adapters", "load", "pirate", "--address", server.address])
    assert loaded.exit_code == 0 and "loaded" in loaded.stdout
    unloaded = runner.invoke(app, ["adapters", "unload", "pirate", "--address", server.address])
    assert unloaded.exit_code == 0

    removed = runner.invoke(app, ["adapters", "remove", "pirate", "--store", store])
    assert removed.exit_code == 0 and "v1" in removed.stdout
    missing = runner.invoke(app, ["adapters", "load", "pirate", "--address", server.address])
    assert missing.exit_code == 2 and "NOT_FOUND" in missing.output


def test_adapters_add_refuses_pickled_weights(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (folder / "adapter_model.bin").write_bytes(b"not safe")
    result = runner.invoke(app, ["adapters", "add", str(folder), "--name", "bad", "--store", str(tmp_path / "store")])
    assert result.exit_code == 2 and "pickle" in result.output


def test_bad_adapter_name_exits_with_the_servers_message(server):
    result = runner.invoke(app, ["generate", "hi", "--adapter", "../x", "--address", server.address])
    assert result.exit_code == 2 and "INVALID_ARGUMENT" in result.output
