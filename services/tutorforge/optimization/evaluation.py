"""Measuring a tutor: each target (base model, adapter, program, adapter + program) answers student turns
through the Chat RPC — the path chatbots take, retrieval included — and every reply is scored; per target,
every figure comes with a 95% bootstrap interval. The optimization service's Evaluate, the optimizer's
baseline/optimized scores and bench/tutor_quality.py all run this code, so their numbers agree."""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tutorforge.artifacts.programs import TeachingProgram, parse_reference
from tutorforge.core.errors import Cancelled, InvalidArgument
from tutorforge.core.names import BASE, validate_name
from tutorforge.core.settings import ModelSettings
from tutorforge.core.validation import echo
from tutorforge.optimization.lm import Passage, TutorClient, as_domain_error, describe_error, root_cause
from tutorforge.optimization.metrics import (
    Embed,
    MetricWeights,
    PedagogicalScore,
    cosine_similarities,
    score_response,
)
from tutorforge.optimization.turns import TutorTurn


@dataclass(frozen=True)
class Target:
    """What answers in an evaluation: "base", "adapter:NAME" or "program:NAME[@VERSION][+ADAPTER]" (a program
    runs on the adapter it was compiled against unless +ADAPTER names another, or +base the base model)."""

    spec: str
    kind: str
    # LoRA adapter; empty = base model. For programs, None = the adapter it was compiled against.
    adapter: str | None = ""
    # Program reference (NAME or NAME@VERSION).
    program: str = ""

    @classmethod
    def parse(cls, spec: str) -> Target:
        spec = spec.strip()
        kind, _, rest = spec.partition(":")
        if spec == BASE:
            return cls(spec, BASE)
        if kind == "adapter" and rest:
            return cls(spec, "adapter", adapter=validate_name(rest, "adapter name"))
        if kind == "program" and rest:
            reference, plus, adapter = rest.partition("+")
            if plus and not adapter:
                raise InvalidArgument(f"target {spec!r}: give an adapter after '+' (or 'base'), or drop the '+'")
            parse_reference(reference, "target program")
            resolved = None if not plus else "" if adapter == BASE else validate_name(adapter, "adapter name")
            return cls(spec, "program", adapter=resolved, program=reference)
        raise InvalidArgument(
            f"target spec {echo(spec)} is not valid: use 'base', 'adapter:NAME' or 'program:NAME[@VERSION][+ADAPTER]' "
            "(ADAPTER 'base' = the base model)"
        )


@dataclass
class Outcome:
    """One turn's reply (or the error that prevented it), the passages chat grounded it on, and its score."""

    turn: TutorTurn
    response: str
    passages: tuple[Passage, ...]
    latency_seconds: float
    error: str = ""
    score: PedagogicalScore | None = None
    failure: BaseException | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn.id,
            "subject": self.turn.subject,
            "kind": self.turn.kind,
            "messages": list(self.turn.messages),
            "query": self.turn.query,
            "reference": self.turn.reference,
            "response": self.response,
            "citations": [asdict(p) for p in self.passages],
            "latency_seconds": self.latency_seconds,
            "error": self.error,
            "score": self.score.to_json() if self.score else None,
        }


def answer_turns(
    tutor: TutorClient,
    turns: Sequence[TutorTurn],
    *,
    adapter: str = "",
    program: str | TeachingProgram = "",
    retrieval: bool = True,
    max_tokens: int = 0,
    threads: int = 4,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Every turn answered through the Chat RPC, `threads` at a time (the engine batches them), in order.

    A failed turn is kept with its error; if every turn fails the first failure is raised (the service
    is unreachable or refuses the request), and a cancellation always stops the run."""

    def one(turn: TutorTurn) -> Outcome:
        started = time.perf_counter()
        response, passages, failure = "", (), None
        try:
            reply = tutor.reply(
                list(turn.messages), adapter=adapter, program=program, retrieval=retrieval, max_tokens=max_tokens
            )
            response, passages = reply.text, reply.passages
        except Exception as error:  # noqa: BLE001 - one bad reply must not sink the whole evaluation
            if isinstance(root_cause(error), Cancelled):
                raise root_cause(error) from None
            failure = error
        outcome = Outcome(
            turn=turn,
            response=response,
            passages=passages,
            latency_seconds=time.perf_counter() - started,
            error=describe_error(failure) if failure else "",
            failure=failure,
        )
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="tutor-eval") as pool:
        outcomes = list(pool.map(one, turns))
    if outcomes and all(outcome.failure for outcome in outcomes):
        raise as_domain_error(outcomes[0].failure, "every turn failed; the first error")
    return outcomes


def score_outcomes(outcomes: list[Outcome], weights: MetricWeights, embed: Embed | None) -> list[Outcome]:
    """Score every outcome in place (a failed reply scores 0); similarity is computed in one batch."""
    similarities: list[float | None] = [None] * len(outcomes)
    if embed is not None:
        answered = [i for i, outcome in enumerate(outcomes) if not outcome.error]
        values = cosine_similarities(
            embed, [outcomes[i].response for i in answered], [outcomes[i].turn.reference for i in answered]
        )
        for index, value in zip(answered, values, strict=True):
            similarities[index] = value
    for outcome, similarity in zip(outcomes, similarities, strict=True):
        turn = outcome.turn
        outcome.score = score_response(
            outcome.response,
            context=turn.context,
            reference=turn.reference,
            weights=weights,
            final_answer=turn.final_answer,
            answer_pattern=turn.answer_pattern,
            similarity=similarity if embed is not None else None,
            passages=[(p.tag, p.text) for p in outcome.passages],
        )
        if outcome.error:
            outcome.score = replace(
                outcome.score, score=0.0, socratic=0.0, similarity=0.0 if embed is not None else None
            )
    return outcomes


BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass
class Estimate:
    """A mean over turns with its 95% percentile-bootstrap interval."""

    mean: float = 0.0
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float], seed: int = 0) -> Estimate:
        if not values:
            return cls()
        mean = statistics.fmean(values)
        if len(values) == 1:
            return cls(mean, mean, mean)
        rng = random.Random(seed)
        n = len(values)
        means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(BOOTSTRAP_RESAMPLES))
        tail = (1 - CONFIDENCE) / 2
        return cls(mean, means[int(tail * BOOTSTRAP_RESAMPLES)], means[int((1 - tail) * BOOTSTRAP_RESAMPLES) - 1])

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{format(self.mean, spec)} [{format(self.low, spec)}, {format(self.high, spec)}]"


# The figures every target gets, each with its interval (in report order).
ESTIMATES = (
    "pedagogical_score",
    "question_rate",
    "answer_reveal_rate",
    "citation_rate",
    "groundedness",
    "context_usage",
    "pedagogical_elements",
    "length_ratio",
    "socratic",
    "similarity",
    "mean_words",
)


@dataclass
class TargetMetrics:
    target: str
    examples: int
    errors: int
    pedagogical_score: Estimate
    # Share of replies that ask the student a question / state the answer / cite a passage they were given.
    question_rate: Estimate
    answer_reveal_rate: Estimate
    citation_rate: Estimate
    # Share of a reply's content words found in the passages it was given.
    groundedness: Estimate
    context_usage: Estimate
    pedagogical_elements: Estimate
    length_ratio: Estimate
    socratic: Estimate
    similarity: Estimate
    mean_words: Estimate
    mean_latency_seconds: float
    score_per_subject: dict[str, float] = field(default_factory=dict)
    score_per_kind: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, target: str, outcomes: Sequence[Outcome]) -> TargetMetrics:
        scores = [outcome.score for outcome in outcomes if outcome.score is not None]
        answered = [o.score for o in outcomes if o.score is not None and not o.error]

        def mean(values: list[float]) -> float:
            return statistics.fmean(values) if values else 0.0

        def grouped(key: Callable[[Outcome], str]) -> dict[str, float]:
            groups: dict[str, list[float]] = defaultdict(list)
            for outcome in outcomes:
                groups[key(outcome) or "unknown"].append(outcome.score.score if outcome.score else 0.0)
            return {name: mean(values) for name, values in sorted(groups.items())}

        return cls(
            target=target,
            examples=len(outcomes),
            errors=sum(1 for outcome in outcomes if outcome.error),
            pedagogical_score=Estimate.of([s.score for s in scores]),
            question_rate=Estimate.of([float(s.asks_question) for s in answered]),
            answer_reveal_rate=Estimate.of([float(s.reveals_answer) for s in answered]),
            citation_rate=Estimate.of([float(s.cites_passage) for s in answered]),
            groundedness=Estimate.of([s.groundedness for s in answered]),
            context_usage=Estimate.of([s.context_usage for s in scores]),
            pedagogical_elements=Estimate.of([s.pedagogical_elements for s in scores]),
            length_ratio=Estimate.of([s.length_ratio for s in scores]),
            socratic=Estimate.of([s.socratic for s in scores]),
            similarity=Estimate.of([s.similarity for s in answered if s.similarity is not None]),
            mean_words=Estimate.of([float(s.words) for s in answered]),
            mean_latency_seconds=mean([o.latency_seconds for o in outcomes]),
            score_per_subject=grouped(lambda o: o.turn.subject),
            score_per_kind=grouped(lambda o: o.turn.kind),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetMetrics:
        return cls(**{k: Estimate(**v) if k in ESTIMATES else v for k, v in data.items()})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """Means and intervals by figure, as recorded in an adapter's or a program's lineage."""
        return {name: asdict(getattr(self, name)) for name in ESTIMATES} | {"examples": self.examples}


def sentence_embedder(settings: ModelSettings) -> Embed:
    """The platform's embedder (all-MiniLM-L6-v2 by default) as a batch function."""
    from tutorforge.core.models import load_embedder

    model = load_embedder(settings)
    return lambda texts: model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
