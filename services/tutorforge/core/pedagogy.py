"""Socratic quality signals of a tutor's turns: does the tutor ask rather than tell? Datasets measure
their records with them and the optimizer's metric penalises a reply that hands over the answer, by the
same rule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Phrases by which a tutor hands over the final result instead of guiding towards it.
_REVEALING = re.compile(
    r"\b(the|your|final|correct|right)\s+(final\s+)?(answer|solution|result)"
    r"(\s+to\s+(this|the|that|your)\s+(question|problem|exercise))?\s+(is|was|would be|=|:)"
    r"|\banswer\s*[:=]\s*\S"
    r"|\bso\s+(it|the answer)\s+(is|equals)\s+-?\d"
    r"|\b(it|this|that)\s+equals\s+-?\d"
    r"|\b(which|it|this|that)\s+(is|are)\s+(equal|equivalent)\s+to\s+-?\d",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class QualitySignals:
    # Share of tutor turns that ask a question (0..1).
    question_rate: float
    # Tutor turns that state a final answer.
    answer_revealing_turns: int
    tutor_turns: int
    # Characters in the tutor turns.
    tutor_characters: int

    @property
    def reveals_answer(self) -> bool:
        return self.answer_revealing_turns > 0


def reveals_answer(text: str) -> bool:
    """A statement (not a question) that hands over the result."""
    return any(
        _REVEALING.search(sentence) for sentence in _SENTENCE_END.split(text) if not sentence.rstrip().endswith("?")
    )


def quality_signals(conversation: list[dict[str, Any]]) -> QualitySignals:
    tutor = [turn["content"] for turn in conversation if turn["role"] == "assistant"]
    asking = sum(1 for text in tutor if "?" in text)
    return QualitySignals(
        question_rate=asking / len(tutor) if tutor else 0.0,
        answer_revealing_turns=sum(1 for text in tutor if reveals_answer(text)),
        tutor_turns=len(tutor),
        tutor_characters=sum(len(text) for text in tutor),
    )
