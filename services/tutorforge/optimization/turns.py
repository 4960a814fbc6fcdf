"""Student turns a tutor is measured on: from a dataset's validation split, or from the bundled tutoring
benchmark (held-out turns that no training set may contain)."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

import dspy

from tutorforge.core.errors import InvalidArgument

# The bundled benchmark set, by the name requests use.
BENCHMARK_SET = "tutor-benchmark"
EVALUATION_SETS = (BENCHMARK_SET,)
METADATA_KEYS = ("grade_level", "subject", "teaching_style")
# Datasets put grounding material in the system turn after one of these labels.
_MATERIAL_LABEL = re.compile(r"^(context|passage|reference material|course material[^:\n]*)\s*:\s*", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class TutorTurn:
    """One student turn to answer: the conversation so far (ending with the student), and what a good
    reply is measured against."""

    id: str
    subject: str
    # The conversation without a system turn; the last turn is the student's.
    messages: tuple[dict[str, str], ...]
    # A good Socratic reply (length and content reference).
    reference: str
    # The answer the tutor must not simply state, and a regex that finds it stated.
    final_answer: str = ""
    answer_pattern: str = ""
    # plain / misconception / pressure / followup ("" for dataset turns).
    kind: str = ""
    # Material the turn is grounded in: the benchmark's document id, or the dataset record's own context.
    document_id: str = ""
    context: str = ""
    history: tuple[dict[str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(self.messages[:-1]))

    @property
    def query(self) -> str:
        return self.messages[-1]["content"]

    def example(self) -> dspy.Example:
        """The turn as a DSPy example (inputs: query and history)."""
        return dspy.Example(
            query=self.query,
            history=list(self.history),
            response=self.reference,
            final_answer=self.final_answer,
            answer_pattern=self.answer_pattern,
            context=self.context,
            subject=self.subject,
            turn_id=self.id,
        ).with_inputs("query", "history")


def _material(system: str) -> str:
    match = _MATERIAL_LABEL.search(system)
    return system[match.end() :] if match else system


def turn_from_record(record: dict[str, Any], position: int = -1) -> TutorTurn | None:
    """A dataset record's tutor reply number `position` among its replies to a student (-1 = the last),
    with the conversation before it; None without one."""
    system, dialogue = _dialogue(record)
    replies = _replies(dialogue)
    if not replies:
        return None
    at = replies[position] if -len(replies) <= position < len(replies) else replies[-1]
    metadata = dict(record.get("metadata") or {})
    source = dict(record.get("source") or {})
    return TutorTurn(
        id=str(record.get("id", "")),
        subject=str(metadata.get("subject", "")) or "unknown",
        messages=tuple(dialogue[:at]),
        reference=dialogue[at]["content"],
        final_answer=str(metadata.get("final_answer") or metadata.get("answer") or ""),
        answer_pattern=str(metadata.get("answer_pattern") or ""),
        kind=str(metadata.get("kind") or ""),
        document_id=str(source.get("document_id") or ""),
        context=str(record.get("context") or source.get("context") or _material(system)).strip(),
    )


def _dialogue(record: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """The record's system text and its student/tutor turns (empty turns dropped)."""
    turns = [t for t in record.get("conversations") or [] if t.get("content", "").strip()]
    system = next((t["content"] for t in turns if t.get("role") == "system"), "")
    dialogue = [{"role": t["role"], "content": t["content"].strip()} for t in turns if t.get("role") in ("user", "assistant")]
    return system, dialogue


def _replies(dialogue: list[dict[str, str]]) -> list[int]:
    """Indexes of the tutor turns that answer a student turn."""
    return [i for i, t in enumerate(dialogue) if t["role"] == "assistant" and i > 0 and dialogue[i - 1]["role"] == "user"]


def turns_from_records(records: list[dict[str, Any]], limit: int = 0, seed: int = 0) -> list[TutorTurn]:
    """One turn per record, at a seeded position among its tutor replies: a dialogue's first reply answers
    a fresh question, its last one confirms a solution, and a tutor is asked both. With a `limit`, a seeded
    sample spread over subjects: datasets are stored card by card, so their first N records are one topic."""
    rng = random.Random(seed)
    turns = []
    for record in records:
        count = len(_replies(_dialogue(record)[1])) or 1
        if (turn := turn_from_record(record, rng.randrange(count))) is not None:
            turns.append(turn)
    if limit <= 0 or limit >= len(turns):
        return turns
    return _spread(rng.sample(turns, len(turns)), limit)


def _spread(turns: list[TutorTurn], limit: int) -> list[TutorTurn]:
    """The first `limit` turns taken round-robin over the subjects, in order: each subject gets its share."""
    by_subject: dict[str, list[TutorTurn]] = {}
    for turn in turns:
        by_subject.setdefault(turn.subject, []).append(turn)
    return [turn for group in zip_longest(*by_subject.values()) for turn in group if turn is not None][:limit]


def benchmark_turns(name: str = BENCHMARK_SET, limit: int = 0) -> list[TutorTurn]:
    """The bundled evaluation set `name` (services/tutorforge/samples/benchmark/tutor_turns.jsonl); with a
    `limit`, its first turns of each subject in turn (the file is stored subject by subject)."""
    if name not in EVALUATION_SETS:
        raise InvalidArgument(f"evaluation_set {name!r} does not exist: use one of {', '.join(EVALUATION_SETS)}")
    from tutorforge.samples import benchmark_turns as benchmark_file

    text = benchmark_file().read_text("utf-8")
    turns = []
    for line in text.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        turns.append(
            TutorTurn(
                id=item["id"],
                subject=item["subject"],
                messages=tuple(item["messages"]),
                reference=item["reference"],
                final_answer=item.get("final_answer", ""),
                answer_pattern=item.get("answer_pattern", ""),
                kind=item.get("kind", ""),
                document_id=item.get("document_id", ""),
            )
        )
    return _spread(turns, limit) if limit > 0 else turns
