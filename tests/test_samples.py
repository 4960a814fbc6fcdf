"""The bundled sample data is well-formed: every file parses, dialogues alternate roles and end with the
tutor, counts and coverage match the README, labels point at real documents, every document yields text."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from pypdf import PdfReader

from tutorforge.core.names import validate_name
from tutorforge.core.pedagogy import quality_signals
from tutorforge.datasets.formats import RecordFormat, parse_file
from tutorforge.samples import (
    SAMPLES_DIR,
    array_dialogues,
    evaluation_chatml,
    evaluation_items,
    instructions,
    material_dir,
    material_documents,
    openai_dialogues,
    read_jsonl,
    retrieval_queries,
    starter_dialogues,
    teacher_scenarios,
)

METADATA_KEYS = {"subject", "grade_level", "teaching_style"}
GRADE_LEVELS = {"elementary", "middle_school", "high_school", "undergraduate"}
REQUIRED_TOPICS = {
    "mathematics": {"fractions", "linear equations", "pythagorean theorem", "probability"},
    "physics": {"newton's laws", "energy conservation", "electric circuits"},
    "chemistry": {"atomic structure", "chemical reactions"},
    "biology": {"photosynthesis", "cell structure", "evolution"},
    "history": {"french revolution", "industrial revolution"},
    "earth_science": {"water cycle", "plate tectonics"},
    "computer_science": {"algorithms", "programming basics"},
    "language_arts": {"persuasive writing"},
    "pedagogy": {"socratic questioning"},
}


def document_text(path: Path) -> str:
    if path.suffix == ".pdf":
        return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        return BeautifulSoup(raw, "html.parser").get_text("\n")
    return raw


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def turns_of(record: dict, key: str = "conversations") -> list[dict]:
    return record[key]


def assert_dialogue_shape(turns: list[dict], where: str, max_exchanges: int = 4) -> None:
    roles = [turn["role"] for turn in turns]
    assert all(isinstance(turn["content"], str) and turn["content"].strip() for turn in turns), where
    body = roles[1:] if roles[0] == "system" else roles
    assert "system" not in body, f"{where}: system turn after the start"
    expected = ["user", "assistant"] * (len(body) // 2)
    assert body == expected, f"{where}: roles must alternate user/assistant and end with assistant: {roles}"
    assert 1 <= len(body) // 2 <= max_exchanges, f"{where}: {len(body) // 2} exchanges"


def assert_metadata(metadata: dict, where: str) -> None:
    assert METADATA_KEYS <= set(metadata), f"{where}: metadata needs {METADATA_KEYS}"
    assert metadata["teaching_style"] == "socratic", where


# --- material ------------------------------------------------------------------------------------------


def test_manifest_lists_every_material_file_with_valid_ids() -> None:
    documents = material_documents()
    files_on_disk = {p.name for p in material_dir().iterdir() if p.name != "manifest.json"}
    assert {d.path.name for d in documents} == files_on_disk
    ids = [d.document_id for d in documents]
    assert len(ids) == len(set(ids)), "document ids must be unique"
    for document in documents:
        validate_name(document.document_id, "document_id")
        assert document.source.startswith("tutorforge sample: "), document.source
        assert document.grade_level, f"{document.document_id} has no grade_level"
        assert all(isinstance(v, str) for v in document.extra.values())
    assert 16 <= len(documents) <= 20


def test_material_covers_required_subjects_and_formats() -> None:
    documents = material_documents()
    topics: dict[str, set[str]] = {}
    for document in documents:
        topics.setdefault(document.category, set()).add(document.topic)
    for category, required in REQUIRED_TOPICS.items():
        missing = required - topics.get(category, set())
        assert not missing, f"{category} misses {missing}"
    formats = Counter(d.path.suffix for d in documents)
    assert formats[".html"] == 2 and formats[".txt"] == 2 and 1 <= formats[".pdf"] <= 2
    assert formats[".md"] == len(documents) - formats[".html"] - formats[".txt"] - formats[".pdf"]


@pytest.mark.parametrize("document", material_documents(), ids=lambda d: d.document_id)
def test_material_document_has_title_and_real_length(document) -> None:
    text = document_text(document.path)
    count = len(text.split())
    assert 600 <= count <= 1800, f"{document.path.name}: {count} words"
    first_line = next(line.strip() for line in text.splitlines() if line.strip())
    if document.path.suffix == ".md":
        assert first_line == f"# {document.title}"
    elif document.path.suffix == ".html":
        soup = BeautifulSoup(document.path.read_text(encoding="utf-8"), "html.parser")
        assert soup.title.get_text() == document.title == soup.h1.get_text()
        assert soup.find("table") and soup.find("h2") and soup.find(["ul", "ol"]) and soup.find("p")
    else:
        assert first_line == document.title


def test_pdfs_carry_extractable_text_and_a_title() -> None:
    pdfs = [d for d in material_documents() if d.path.suffix == ".pdf"]
    assert pdfs
    for document in pdfs:
        reader = PdfReader(document.path)
        assert reader.metadata.title == document.title
        text = document_text(document.path)
        # The text is real prose, not a handful of glyphs: a topic word appears many times.
        assert text.lower().count(document.topic.split()[0]) >= 5, document.path.name


# --- retrieval queries --------------------------------------------------------------------------------


def test_retrieval_queries_label_existing_documents_and_cover_all() -> None:
    queries = read_jsonl(retrieval_queries())
    assert len(queries) >= 30
    ids = {d.document_id for d in material_documents()}
    titles = {d.title.lower() for d in material_documents()}
    for query in queries:
        assert query["query"].strip() and query["query"].lower() not in titles
        assert query["relevant"] and set(query["relevant"]) <= ids, query
    covered = {doc for query in queries for doc in query["relevant"]}
    assert covered == ids, f"documents without a query: {ids - covered}"
    assert len({q["query"].lower() for q in queries}) == len(queries), "duplicate queries"


# --- dialogues ----------------------------------------------------------------------------------------


def test_starter_dialogues_are_socratic_chatml() -> None:
    records = read_jsonl(starter_dialogues())
    assert len(records) >= 66
    ending_with_question = 0
    for index, record in enumerate(records):
        where = f"starter.jsonl line {index + 1}"
        turns = turns_of(record)
        assert_dialogue_shape(turns, where)
        assert 2 <= sum(t["role"] == "user" for t in turns), f"{where}: needs 2-4 exchanges"
        assert sum(len(t["content"].split()) for t in turns) <= 350, f"{where}: too long"
        assert_metadata(record["metadata"], where)
        assert record["metadata"]["grade_level"] in GRADE_LEVELS, where
        ending_with_question += turns[-1]["content"].rstrip().endswith("?")
    assert ending_with_question >= 0.8 * len(records)
    assert len({r["metadata"]["subject"] for r in records}) >= 8
    assert {r["metadata"]["grade_level"] for r in records} == GRADE_LEVELS
    systems = {t["content"] for r in records for t in r["conversations"] if t["role"] == "system"}
    assert len(systems) >= 20, "system prompts should vary"


def test_starter_dialogues_are_not_near_duplicates() -> None:
    records = read_jsonl(starter_dialogues())
    openers = [next(t["content"] for t in r["conversations"] if t["role"] == "user") for r in records]
    assert len(set(openers)) == len(openers)
    bags = [
        words(" ".join(turn["content"] for turn in record["conversations"] if turn["role"] != "system"))
        for record in records
    ]
    for (i, a), (j, b) in itertools.combinations(enumerate(bags), 2):
        assert len(a & b) / len(a | b) < 0.5, f"dialogues {i + 1} and {j + 1} are near-identical"


def test_other_dialogue_formats() -> None:
    openai = read_jsonl(openai_dialogues())
    assert len(openai) == 6
    for index, record in enumerate(openai):
        assert "conversations" not in record
        assert_dialogue_shape(record["messages"], f"openai_format.jsonl line {index + 1}")
        assert_metadata(record["metadata"], f"openai_format.jsonl line {index + 1}")
    array = json.loads(array_dialogues().read_text(encoding="utf-8"))
    assert isinstance(array, list) and len(array) == 4
    for index, record in enumerate(array):
        assert_dialogue_shape(record["conversations"], f"array_format.json item {index}")
        assert_metadata(record["metadata"], f"array_format.json item {index}")


# --- instructions, scenarios, evaluation ---------------------------------------------------------------


def test_instructions_and_scenarios() -> None:
    records = read_jsonl(instructions())
    assert len(records) == 20
    for record in records:
        assert all(record[key].strip() for key in ("instruction", "context", "response"))
        assert "?" in record["response"], f"{record['instruction']!r}: a Socratic reply asks a question"
        assert_metadata(record["metadata"], record["instruction"])
    scenarios = read_jsonl(teacher_scenarios())
    assert len(scenarios) == 12
    assert len({s["name"] for s in scenarios}) == 12
    for scenario in scenarios:
        for key in ("name", "description", "expected_response", "category"):
            assert scenario[key].strip(), f"{scenario['name']!r}: empty {key}"
        assert len(scenario["expected_response"].split()) >= 60, scenario["name"]


def test_evaluation_items_are_held_out_and_mirrored_as_chatml() -> None:
    items = read_jsonl(evaluation_items())
    assert len(items) == 24
    starter_user_turns = {
        turn["content"].strip().lower()
        for record in read_jsonl(starter_dialogues())
        for turn in record["conversations"]
        if turn["role"] == "user"
    }
    for item in items:
        assert item["query"].strip().lower() not in starter_user_turns, item["query"]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", item["context"].strip()) if s]
        assert 2 <= len(sentences) <= 5, f"context of {item['query']!r} has {len(sentences)} sentences"
        assert item["reference"].strip()
        assert_metadata(item["metadata"], item["query"])
    chatml = read_jsonl(evaluation_chatml())
    assert len(chatml) == len(items)
    for item, record in zip(items, chatml, strict=True):
        system, user, assistant = record["conversations"]
        assert system["role"] == "system" and item["context"] in system["content"]
        assert (user["role"], user["content"]) == ("user", item["query"])
        assert (assistant["role"], assistant["content"]) == ("assistant", item["reference"])
        assert record["metadata"] == item["metadata"]


# --- the datasets service reads every record file without dropping anything ----------------------------

RECORD_FILES = {
    "dialogues/starter.jsonl": RecordFormat.CHATML,
    "dialogues/openai_format.jsonl": RecordFormat.OPENAI,
    "dialogues/array_format.json": RecordFormat.CHATML,
    "dialogues/evaluation_chatml.jsonl": RecordFormat.CHATML,
    "instructions/instructions.jsonl": RecordFormat.INSTRUCTION,
    "scenarios/teacher_training.jsonl": RecordFormat.SCENARIO,
}


@pytest.mark.parametrize("relative", sorted(RECORD_FILES))
def test_datasets_parser_accepts_every_record(relative: str) -> None:
    path = SAMPLES_DIR / relative
    parsed = parse_file(relative, path.read_bytes())
    assert parsed.format == RECORD_FILES[relative]
    assert not parsed.issues, parsed.issues
    assert len(parsed.records) == parsed.records_read > 0
    if RECORD_FILES[relative] is RecordFormat.SCENARIO:
        return
    # Tutor replies ask rather than tell, by the same signals the dataset builder filters on.
    for index, record in parsed.records:
        signals = quality_signals(record["conversations"])
        assert not signals.reveals_answer, f"{relative}[{index}]: a tutor turn reads as revealing the answer"
        assert signals.question_rate >= 0.5, f"{relative}[{index}]: tutor asks too few questions"
