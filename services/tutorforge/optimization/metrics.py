"""The pedagogical metric: how much of the reference material a reply uses, which teaching moves it
makes, whether its length fits the reference, whether it stays Socratic (ends with a guiding
question, keeps the final answer back) and how close it is in meaning to the reference reply.

The first three components with weights 40/30/30 are the seed project's pedagogical score; the
Socratic signals and the embedding similarity join it with configurable weights (default 0)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.pedagogy import reveals_answer as states_answer

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Function words say nothing about whether the material was used.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "him",
        "her",
        "us",
        "them",
        "my",
        "your",
        "our",
        "their",
        "his",
        "what",
        "which",
        "who",
        "whom",
        "do",
        "does",
        "did",
        "so",
        "not",
        "no",
        "yes",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "than",
        "then",
        "too",
        "very",
        "just",
        "also",
        "into",
        "out",
        "up",
        "down",
        "over",
        "about",
    ]
)

# Teaching moves, each found by any of its markers (whole words or phrases, case-insensitive).
PEDAGOGICAL_MARKERS: dict[str, tuple[str, ...]] = {
    "question": ("?", "how", "what", "why", "can you", "could you"),
    "example": ("for example", "for instance", "such as", "e.g.", "like", "suppose"),
    "explanation": ("because", "therefore", "this means", "that means", "so that", "since", "which is why"),
    "engagement": ("let's", "let us", "try", "imagine", "think about", "notice", "what do you think"),
}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {word for word in words(text) if word not in _STOPWORDS and len(word) > 1}


def context_usage(response: str, context: str) -> float:
    """Share of the context's content words that the response uses (0 when there is no context)."""
    wanted = content_words(context)
    if not wanted:
        return 0.0
    return len(wanted & content_words(response)) / len(wanted)


def _has_marker(lowered: str, marker: str) -> bool:
    if not marker[0].isalnum():
        return marker in lowered
    return re.search(rf"(?<![a-z0-9']){re.escape(marker)}(?![a-z0-9])", lowered) is not None


def pedagogical_moves(response: str) -> dict[str, bool]:
    lowered = response.lower()
    return {
        move: any(_has_marker(lowered, m) for m in markers) for move, markers in PEDAGOGICAL_MARKERS.items()
    }


def pedagogical_elements(response: str) -> float:
    """Fraction of the four teaching moves (question, example, explanation, engagement) present."""
    moves = pedagogical_moves(response)
    return sum(moves.values()) / len(moves)


def length_ratio(response: str, reference: str) -> float:
    """min(len(response)/len(reference), len(reference)/len(response)) in words: 1 = same length."""
    produced, expected = len(words(response)), len(words(reference))
    if not produced or not expected:
        return 0.0
    return min(produced / expected, expected / produced)


def ends_with_question(response: str) -> bool:
    return response.rstrip(" \t\n\"')*_”’").endswith("?")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def asks_question(response: str) -> bool:
    """The reply puts a question to the student: one of its sentences (of 3+ words) ends with '?'."""
    return any(
        sentence.rstrip(" \"')*_”’").endswith("?") and len(words(sentence)) >= 3
        for sentence in _SENTENCE_END.split(response.strip())
    )


def reveals_answer(response: str, final_answer: str = "", answer_pattern: str = "") -> bool:
    """True when the reply states the result: an explicit "the answer is …" (the datasets service's rule),
    the turn's answer pattern, or the example's known final answer."""
    if states_answer(response):
        return True
    if answer_pattern and re.search(answer_pattern, response, re.IGNORECASE):
        return True
    answer = " ".join(words(final_answer))
    if not answer:
        return False
    return re.search(rf"(?<![a-z0-9]){re.escape(answer)}(?![a-z0-9])", " ".join(words(response))) is not None


def socratic(response: str, final_answer: str = "", answer_pattern: str = "") -> float:
    """Half for asking the student a question, half for keeping the final answer back."""
    return (float(asks_question(response)) + float(not reveals_answer(response, final_answer, answer_pattern))) / 2


_TAG = re.compile(r"\[(\d{1,2})\]")


def cited_tags(response: str, tags: Sequence[str]) -> list[str]:
    """The passage tags ("[1]", …) among `tags` that the reply cites."""
    used = {f"[{number}]" for number in _TAG.findall(response)}
    return [tag for tag in tags if tag in used]


def groundedness(response: str, passages: Sequence[str]) -> float:
    """Share of the reply's content words found in the passages it was given (0 with no passage): how much
    of what the tutor says comes from the material rather than from the model."""
    said = content_words(response)
    if not said or not passages:
        return 0.0
    source = set().union(*(content_words(p) for p in passages))
    return len(said & source) / len(said)


@dataclass(frozen=True)
class MetricWeights:
    """Weights of the pedagogical score, normalised by their sum. Defaults: the seed's 40/30/30."""

    context_usage: float = 0.4
    pedagogical_elements: float = 0.3
    length_ratio: float = 0.3
    socratic: float = 0.0
    similarity: float = 0.0

    def __post_init__(self) -> None:
        values = asdict(self)
        bad = {name: value for name, value in values.items() if not math.isfinite(value) or value < 0}
        if bad:
            raise InvalidArgument(f"metric weights must be finite and >= 0; got {bad}")
        if sum(values.values()) <= 0:
            raise InvalidArgument(
                "metric weights must sum to a positive number (e.g. context_usage=0.4, pedagogical_elements=0.3, "
                f"length_ratio=0.3); got {values}"
            )

    @classmethod
    def from_overrides(cls, **overrides: float | None) -> MetricWeights:
        """Defaults with the given (non-None) weights replaced."""
        return cls(**{name: value for name, value in overrides.items() if value is not None})

    def normalized(self) -> dict[str, float]:
        values = asdict(self)
        total = sum(values.values())
        return {name: value / total for name, value in values.items()}

    def to_json(self) -> dict[str, float]:
        return asdict(self)


COMPONENTS = tuple(field.name for field in fields(MetricWeights))


@dataclass(frozen=True)
class PedagogicalScore:
    score: float
    context_usage: float
    pedagogical_elements: float
    length_ratio: float
    socratic: float
    # None when no embedder was given (the component then weighs 0).
    similarity: float | None
    ends_with_question: bool
    asks_question: bool
    reveals_answer: bool
    # Whether the reply cites one of the passages it was given, and how much of it they support.
    cites_passage: bool
    groundedness: float
    words: int
    moves: dict[str, bool]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def feedback(self, weights: MetricWeights) -> str:
        """Textual feedback for reflective optimizers (GEPA): what to keep and what to change."""
        notes = [f"Score {self.score:.2f}."]
        used = weights.normalized()
        if used["context_usage"] and self.context_usage < 0.3:
            notes.append(
                f"Use more of the reference material's words and facts (context usage {self.context_usage:.2f})."
            )
        missing = [move for move, present in self.moves.items() if not present]
        if used["pedagogical_elements"] and missing:
            notes.append(f"Add the missing teaching moves: {', '.join(missing)}.")
        if used["length_ratio"] and self.length_ratio < 0.6:
            notes.append(f"Match the reference reply's length better (length ratio {self.length_ratio:.2f}).")
        if not self.asks_question:
            notes.append("Ask the student one guiding question instead of explaining everything.")
        if self.reveals_answer:
            notes.append("Do not reveal the final answer; let the student reach it.")
        if self.similarity is not None and used["similarity"] and self.similarity < 0.5:
            notes.append(f"Stay closer in meaning to the reference reply (similarity {self.similarity:.2f}).")
        if len(notes) == 1:
            notes.append("Good Socratic reply: keep this style.")
        return " ".join(notes)


Embed = Callable[[Sequence[str]], Any]


def cosine_similarities(embed: Embed, responses: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine similarity of each response to its reference, clipped to [0, 1]."""
    import numpy as np

    if not responses:
        return []
    vectors = np.asarray(embed([*responses, *references]), dtype=np.float32)
    left, right = vectors[: len(responses)], vectors[len(responses) :]
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    values = (left * right).sum(axis=1) / np.maximum(norms, 1e-12)
    return [float(min(1.0, max(0.0, value))) for value in values]


def score_response(
    response: str,
    *,
    context: str,
    reference: str,
    weights: MetricWeights,
    final_answer: str = "",
    answer_pattern: str = "",
    similarity: float | None = None,
    passages: Sequence[tuple[str, str]] = (),
) -> PedagogicalScore:
    """Score one reply. `passages` are the (tag, text) pairs the reply was grounded on (retrieval); when
    there are any, context usage is measured against them — what the tutor was actually given."""
    if passages:
        context = "\n\n".join(text for _, text in passages)
    components = {
        "context_usage": context_usage(response, context),
        "pedagogical_elements": pedagogical_elements(response),
        "length_ratio": length_ratio(response, reference),
        "socratic": socratic(response, final_answer, answer_pattern),
        "similarity": similarity or 0.0,
    }
    used = weights.normalized()
    if similarity is None and used["similarity"]:
        raise InvalidArgument("the similarity weight is set but no embedder was given to score with")
    total = sum(used[name] * value for name, value in components.items())
    return PedagogicalScore(
        score=total,
        context_usage=components["context_usage"],
        pedagogical_elements=components["pedagogical_elements"],
        length_ratio=components["length_ratio"],
        socratic=components["socratic"],
        similarity=similarity,
        ends_with_question=ends_with_question(response),
        asks_question=asks_question(response),
        reveals_answer=reveals_answer(response, final_answer, answer_pattern),
        cites_passage=bool(cited_tags(response, [tag for tag, _ in passages])),
        groundedness=groundedness(response, [text for _, text in passages] or ([context] if context else [])),
        words=len(words(response)),
        moves=pedagogical_moves(response),
    )
