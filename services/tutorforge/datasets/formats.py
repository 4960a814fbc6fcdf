"""Reading record files (JSON array or JSONL) in the four file formats, all normalised to ChatML records.

A record is `{"conversations": [{"role", "content"}...], "metadata": {...}, "source": {...}}`; the builder
adds its `id` (content hash) at the end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.validation import loads_json

METADATA_FIELDS = ("subject", "grade_level", "teaching_style")
MIN_INSTRUCTION_CHARS = 10
INSTRUCTION_COLUMNS = ("instruction", "context", "response")
SCENARIO_COLUMNS = ("name", "description", "expected_response")
SCENARIO_SYSTEM = "You are an experienced teacher coaching a colleague on how to respond to classroom situations."
INSTRUCTION_SYSTEM = "You are a Socratic tutor. Guide the student with questions instead of giving answers."


class RecordFormat(str, Enum):
    CHATML = "chatml"
    OPENAI = "openai"
    INSTRUCTION = "instruction"
    SCENARIO = "scenario"


@dataclass
class Issue:
    """Why the record at `index` of `source` was not kept."""

    source: str
    index: int
    reason: str
    # Category counted in the manifest.
    kind: str = "invalid"


@dataclass
class ParsedFile:
    source: str
    format: RecordFormat
    records_read: int
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def read_items(source: str, content: bytes) -> tuple[list[tuple[int, Any]], list[Issue]]:
    """The file's items with their indexes: a JSON array, one JSON object, or JSONL."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"{source} is not UTF-8 text ({error}); save it as UTF-8 JSON or JSONL") from error
    stripped = text.strip()
    if not stripped:
        raise InvalidArgument(f"{source} is empty: give a JSON array or JSONL file of records")
    if stripped.startswith("["):
        try:
            value = loads_json(stripped, source)
        except json.JSONDecodeError as error:
            raise InvalidArgument(
                f"{source} starts like a JSON array but is not valid JSON (line {error.lineno}, column {error.colno}: "
                f"{error.msg}); fix it or write one record per line (JSONL)"
            ) from error
        return list(enumerate(value)), []
    items: list[tuple[int, Any]] = []
    issues: list[Issue] = []
    index = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            items.append((index, loads_json(line, f"{source} record {index}")))
        except json.JSONDecodeError as error:
            issues.append(Issue(source, index, f"malformed JSON ({error.msg} at column {error.colno})", "malformed"))
        index += 1
    if not items and issues:
        if len(issues) == 1:
            # One unparseable "line" is a broken single JSON document, not a JSONL file.
            raise InvalidArgument(f"{source} is not valid JSON or JSONL: {issues[0].reason}")
        raise InvalidArgument(f"{source}: no line is valid JSON (first: {issues[0].reason}); give JSON or JSONL records")
    return items, issues


def detect_format(item: Any) -> RecordFormat | None:
    if not isinstance(item, dict):
        return None
    if "conversations" in item:
        return RecordFormat.CHATML
    if "messages" in item:
        return RecordFormat.OPENAI
    if "instruction" in item:
        return RecordFormat.INSTRUCTION
    if "expected_response" in item or ("name" in item and "description" in item):
        return RecordFormat.SCENARIO
    return None


def _metadata(item: dict[str, Any]) -> dict[str, str]:
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict):
        return {}
    return {str(key): str(value) for key, value in metadata.items() if value is not None and str(value) != ""}


def _from_turns(item: dict[str, Any], key: str) -> dict[str, Any] | str:
    turns = item.get(key)
    if not isinstance(turns, list):
        return f"'{key}' must be a list of turns"
    conversations = []
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            return f"turn {position} needs 'role' and 'content'"
        if not isinstance(turn["content"], str):
            return f"turn {position} content must be text"
        conversations.append({"role": str(turn["role"]), "content": turn["content"]})
    return {"conversations": conversations, "metadata": _metadata(item)}


def _missing_or_empty(item: dict[str, Any], columns: tuple[str, ...]) -> str | None:
    missing = [column for column in columns if column not in item]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    empty = [column for column in columns if not isinstance(item[column], str) or not item[column].strip()]
    if empty:
        return f"empty value(s) in {', '.join(empty)}"
    return None


def _from_instruction(item: dict[str, Any]) -> dict[str, Any] | str:
    # Seed rules: every column present, no empty values, an instruction long enough to mean something.
    problem = _missing_or_empty(item, INSTRUCTION_COLUMNS)
    if problem:
        return problem
    if len(item["instruction"].strip()) < MIN_INSTRUCTION_CHARS:
        return f"instruction shorter than {MIN_INSTRUCTION_CHARS} characters"
    return {
        "conversations": [
            {"role": "system", "content": f"{INSTRUCTION_SYSTEM}\n\nContext: {item['context'].strip()}"},
            {"role": "user", "content": item["instruction"].strip()},
            {"role": "assistant", "content": item["response"].strip()},
        ],
        "metadata": _metadata(item),
    }


def _from_scenario(item: dict[str, Any]) -> dict[str, Any] | str:
    problem = _missing_or_empty(item, SCENARIO_COLUMNS)
    if problem:
        return problem
    prompt = (
        f"Scenario: {item['name'].strip()}\nDescription: {item['description'].strip()}\n"
        "Provide an appropriate teacher response:"
    )
    metadata = _metadata(item)
    if isinstance(item.get("category"), str) and item["category"].strip():
        metadata.setdefault("category", item["category"].strip())
    metadata.setdefault("teaching_style", "teacher_training")
    return {
        "conversations": [
            {"role": "system", "content": SCENARIO_SYSTEM},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": item["expected_response"].strip()},
        ],
        "metadata": metadata,
    }


_CONVERTERS = {
    RecordFormat.CHATML: lambda item: _from_turns(item, "conversations"),
    RecordFormat.OPENAI: lambda item: _from_turns(item, "messages"),
    RecordFormat.INSTRUCTION: _from_instruction,
    RecordFormat.SCENARIO: _from_scenario,
}


def parse_file(source: str, content: bytes, format: RecordFormat | None = None) -> ParsedFile:
    """Normalise every item of a file; items that cannot be read become issues with their index.

    The format is detected from the first readable item when not given; a file whose items cannot be
    recognised at all is an InvalidArgument (nothing in it could be kept)."""
    items, issues = read_items(source, content)
    if format is None:
        format = next((detected for _, item in items if (detected := detect_format(item))), None)
        if format is None:
            raise InvalidArgument(
                f"cannot tell the format of {source}: records need 'conversations' (ChatML), 'messages' (OpenAI), "
                "'instruction'/'context'/'response' (instructions) or 'name'/'description'/'expected_response' (scenarios)"
            )
    parsed = ParsedFile(source=source, format=format, records_read=len(items) + len(issues), issues=issues)
    for index, item in items:
        if not isinstance(item, dict):
            parsed.issues.append(Issue(source, index, f"not a JSON object ({type(item).__name__})"))
            continue
        result = _CONVERTERS[format](item)
        if isinstance(result, str):
            parsed.issues.append(Issue(source, index, result))
            continue
        result["source"] = {"kind": format.value, "file": source, "index": index}
        parsed.records.append((index, result))
    parsed.issues.sort(key=lambda issue: issue.index)
    return parsed
