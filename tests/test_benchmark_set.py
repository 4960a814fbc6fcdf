"""The held-out tutoring benchmark set (samples/benchmark/tutor_turns.jsonl) is well-formed, covers every
subject and kind, has answer patterns that detect a revealed answer and nothing else, and shares no text with
the training samples or the material it is grounded in."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tutorforge.core.pedagogy import reveals_answer
from tutorforge.datasets.dedup import Decontaminator, ngrams, words
from tutorforge.optimization import metrics
from tutorforge.optimization.turns import benchmark_turns
from tutorforge.retrieval.documents import content_type_for, extract_text
from tutorforge.samples import SAMPLES_DIR, material_documents, read_jsonl

BENCHMARK = SAMPLES_DIR / "benchmark" / "tutor_turns.jsonl"
KINDS = {"plain", "misconception", "pressure", "followup"}
# Everything the datasets service may train on; the benchmark must stay disjoint from all of it.
TRAINING_SOURCES = ("dialogues", "instructions", "scenarios", "evaluation.jsonl")
# Replies that state nothing: an answer pattern matching one of them would count every reply as a leak.
GENERIC_REPLIES = (
    "That's a great question! Let's think about it together. What do you already know about this topic?",
    "I can't just hand you the answer, but I can help you get there. What have you tried so far?",
    "Let's break the problem into smaller steps. What is the first thing the question asks you to find?",
    "Good effort. Can you explain your reasoning for each step, and where it might have gone wrong?",
    "Look back at your notes on this section. Which definition or rule seems most relevant here, and why?",
)
# Student turns are new wording: no 8-word run from the material. References may reuse the material's
# terms and short phrases, but not whole sentences.
STUDENT_MATERIAL_NGRAM = 8
REFERENCE_MATERIAL_NGRAM = 12


@cache
def turns() -> list[dict[str, Any]]:
    return read_jsonl(BENCHMARK)


def student_texts(turn: dict[str, Any]) -> list[str]:
    return [message["content"] for message in turn["messages"] if message["role"] == "user"]


def strings_in(value: Any) -> list[str]:
    """Every string inside a JSON value (records of any training format)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def training_texts() -> list[str]:
    paths: list[Path] = []
    for name in TRAINING_SOURCES:
        source = SAMPLES_DIR / name
        if source.is_dir():
            paths.extend(sorted(p for p in source.rglob("*") if p.suffix in {".json", ".jsonl"}))
        else:
            paths.append(source)
    assert len(paths) >= 7, f"training sample files missing: {paths}"
    texts: list[str] = []
    for path in paths:
        records = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else read_jsonl(path)
        texts.extend(strings_in(records))
    return texts


def test_counts_and_coverage() -> None:
    items = turns()
    assert len(items) >= 80
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    by_subject: dict[str, Counter] = {}
    for item in items:
        assert item["kind"] in KINDS, item["id"]
        by_subject.setdefault(item["subject"], Counter())[item["kind"]] += 1
    assert len(by_subject) >= 8, sorted(by_subject)
    for subject, kinds in by_subject.items():
        assert set(kinds) == KINDS, f"{subject} lacks {KINDS - set(kinds)}"


def test_documents_exist_and_match_the_subject() -> None:
    category = {document.document_id: document.category for document in material_documents()}
    for item in turns():
        assert item["document_id"] in category, f"{item['id']}: unknown document_id {item['document_id']!r}"
        assert item["subject"] == category[item["document_id"]], item["id"]


def test_conversations_alternate_and_end_with_the_student() -> None:
    for item in turns():
        roles = [message["role"] for message in item["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], f"{item['id']}: {roles}"
        assert all(message["content"].strip() for message in item["messages"]), item["id"]
        # A follow-up is student, tutor, student; every other kind is one student turn.
        assert len(roles) == (3 if item["kind"] == "followup" else 1), item["id"]
        for message in item["messages"]:
            if message["role"] == "assistant":
                assert message["content"].rstrip().endswith("?"), item["id"]
                assert not reveals_answer(message["content"]), item["id"]


def test_references_are_socratic() -> None:
    for item in turns():
        reference = item["reference"]
        assert 35 <= len(reference.split()) <= 70, f"{item['id']}: {len(reference.split())} words"
        assert reference.rstrip().endswith("?"), item["id"]
        assert not reveals_answer(reference), item["id"]


def test_answer_patterns_detect_the_answer_and_nothing_else() -> None:
    for item in turns():
        pattern = re.compile(item["answer_pattern"], re.IGNORECASE)
        assert pattern.search(item["final_answer"]), f"{item['id']}: pattern misses its own final_answer"
        assert not pattern.search(item["reference"]), f"{item['id']}: the reference states the answer"
        for message in item["messages"]:
            assert not pattern.search(message["content"]), f"{item['id']}: matches a {message['role']} turn"
        for reply in GENERIC_REPLIES:
            assert not pattern.search(reply), f"{item['id']}: matches a generic reply {reply!r}"


def test_the_benchmark_scorer_flags_the_answer_only() -> None:
    """The scorer's reveal check (pattern, "the answer is ..." phrasing, and the final answer's words) flags
    the final answer, but neither the reference nor a reply that only repeats the conversation."""
    for item in turns():
        answer, pattern = item["final_answer"], item["answer_pattern"]
        assert metrics.reveals_answer(answer, answer, pattern), item["id"]
        for message in [*item["messages"], {"role": "reference", "content": item["reference"]}]:
            flagged = metrics.reveals_answer(message["content"], answer, pattern)
            assert not flagged, f"{item['id']}: the scorer flags the {message['role']} turn"
        assert metrics.asks_question(item["reference"]), item["id"]
    loaded = benchmark_turns()
    assert [(turn.id, turn.kind, turn.document_id) for turn in loaded] == [
        (item["id"], item["kind"], item["document_id"]) for item in turns()
    ]


def test_no_text_shared_with_training_samples() -> None:
    decontaminator = Decontaminator(training_texts(), n=8)
    for item in turns():
        conversation = [*item["messages"], {"role": "assistant", "content": item["reference"]}]
        overlap = decontaminator.overlap(conversation)
        assert overlap is None, f"{item['id']}: shares text with the training samples: {overlap}"


@pytest.mark.parametrize(
    ("role", "n"), [("student", STUDENT_MATERIAL_NGRAM), ("reference", REFERENCE_MATERIAL_NGRAM)]
)
def test_no_sentences_copied_from_the_material(role: str, n: int) -> None:
    material: set[tuple[str, ...]] = set()
    for document in material_documents():
        path = document.path
        text = extract_text(path.read_bytes(), content_type_for("", path.name), path.name)
        material |= ngrams(words(text), n)
    for item in turns():
        for text in student_texts(item) if role == "student" else [item["reference"]]:
            shared = ngrams(words(text), n) & material
            assert not shared, f"{item['id']}: {role} copies the material: {' '.join(min(shared))}"
