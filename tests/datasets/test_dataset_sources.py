"""Every file source is read, detected and normalised to ChatML; unreadable items are named with their index."""

from __future__ import annotations

import json

import pytest
from dataset_helpers import fixture_bytes, jsonl

from tutorforge.core.errors import InvalidArgument
from tutorforge.datasets.formats import MIN_INSTRUCTION_CHARS, RecordFormat, parse_file


def test_chatml_jsonl_is_detected_and_keeps_metadata():
    parsed = parse_file("dialogues.jsonl", fixture_bytes("dialogues.jsonl"))
    assert parsed.format is RecordFormat.CHATML
    assert parsed.records_read == 10 and not parsed.issues
    index, record = parsed.records[3]
    assert index == 3
    assert record["conversations"][0] == {"role": "user", "content": "Why do plants need sunlight?"}
    assert record["metadata"] == {"subject": "science", "grade_level": "5", "teaching_style": "socratic"}
    assert record["source"] == {"kind": "chatml", "file": "dialogues.jsonl", "index": 3}


def test_openai_json_array_is_detected():
    parsed = parse_file("openai.json", fixture_bytes("openai.json"))
    assert parsed.format is RecordFormat.OPENAI
    assert [turn["role"] for turn in parsed.records[0][1]["conversations"]] == ["system", "user", "assistant"]


def test_instruction_records_render_as_system_context_user_assistant():
    parsed = parse_file("instructions.jsonl", fixture_bytes("instructions.jsonl"))
    assert parsed.format is RecordFormat.INSTRUCTION
    conversation = parsed.records[0][1]["conversations"]
    assert [turn["role"] for turn in conversation] == ["system", "user", "assistant"]
    assert "Context: Grade 7 class on integer operations." in conversation[0]["content"]
    assert conversation[1]["content"].startswith("A student asks why multiplying two negative")
    assert conversation[2]["content"].startswith("What happens to 3 × (-2)")


def test_scenarios_render_in_teacher_training_form():
    parsed = parse_file("scenarios.jsonl", fixture_bytes("scenarios.jsonl"))
    assert parsed.format is RecordFormat.SCENARIO
    record = parsed.records[1][1]
    prompt = record["conversations"][1]["content"]
    assert prompt.startswith("Scenario: Wrong answer with confidence\nDescription: A student insists")
    assert prompt.endswith("Provide an appropriate teacher response:")
    assert record["conversations"][2]["content"].startswith("Ask the student to compare 0.25")
    assert record["metadata"]["category"] == "misconceptions"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"instruction": "Explain fractions to me", "context": "grade 4", "metadata": {}}, "missing column(s) response"),
        ({"instruction": "Explain fractions to me", "context": "  ", "response": "What is a half?"}, "empty value(s) in context"),
        ({"instruction": "Why?", "context": "grade 4", "response": "What do you think?"}, f"instruction shorter than {MIN_INSTRUCTION_CHARS} characters"),
    ],
)
def test_instruction_seed_rules(item, reason):
    good = {"instruction": "Explain why the sky is blue", "context": "grade 5", "response": "What colour does sunlight contain?"}
    parsed = parse_file("seed.jsonl", jsonl([good, item]))
    assert [r[0] for r in parsed.records] == [0]
    assert [(issue.index, issue.reason) for issue in parsed.issues] == [(1, reason)]


def test_malformed_jsonl_lines_are_reported_by_index_and_the_rest_kept():
    lines = [json.dumps({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Why?"}]}),
             '{"conversations": [ {"role": "user", ',
             "[1, 2]"]
    parsed = parse_file("mixed.jsonl", "\n".join(lines).encode())
    assert [index for index, _ in parsed.records] == [0]
    assert parsed.issues[0].index == 1 and parsed.issues[0].reason.startswith("malformed JSON")
    assert parsed.issues[1].index == 2 and parsed.issues[1].reason == "not a JSON object (list)"
    assert parsed.records_read == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"[{\"conversations\": []},", "starts like a JSON array but is not valid JSON"),
        (b"\xff\xfe\x00garbage", "is not UTF-8"),
        (jsonl([{"foo": 1}, {"bar": 2}]), "cannot tell the format"),
        (b"not json at all", "is not valid JSON or JSONL"),
    ],
)
def test_unreadable_files_are_refused_with_what_to_fix(content, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_file("bad.jsonl", content)


def test_explicit_format_overrides_detection():
    parsed = parse_file("x.jsonl", jsonl([{"messages": [{"role": "user", "content": "hi"}]}]), RecordFormat.CHATML)
    assert parsed.issues[0].reason == "'conversations' must be a list of turns"
