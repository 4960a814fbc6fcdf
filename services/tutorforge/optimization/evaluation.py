"""Running a teaching program over examples and measuring it: per-example outcomes, and per-target
metrics (pedagogical score and its components, Socratic rates, embedding similarity to the
references, latency, score per subject)."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import dspy

from tutorforge.core.errors import Cancelled, InvalidArgument
from tutorforge.core.names import validate_name
from tutorforge.core.settings import ModelSettings
from tutorforge.optimization.lm import as_domain_error, describe_error, root_cause
from tutorforge.optimization.metrics import (
    Embed,
    MetricWeights,
    PedagogicalScore,
    cosine_similarities,
    score_response,
)

BASE = "base"


@dataclass(frozen=True)
class Target:
    """What answers in an evaluation: "base", "adapter:NAME" or "program:NAME[@ADAPTER]"."""

    spec: str
    kind: str
    # LoRA adapter of the LM; empty = base model. For programs, None = the adapter it was optimized over.
    adapter: str | None = ""
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
            name, at, adapter = rest.partition("@")
            if at and not adapter:
                raise InvalidArgument(
                    f"target {spec!r}: give an adapter after '@' (or 'base'), or drop the '@'"
                )
            resolved = None if not at else "" if adapter == BASE else validate_name(adapter, "adapter name")
            return cls(spec, "program", adapter=resolved, program=validate_name(name, "program name"))
        raise InvalidArgument(
            f"target {spec!r} is not valid: use 'base', 'adapter:NAME' or 'program:NAME[@ADAPTER]' "
            "(ADAPTER 'base' = the base model)"
        )


@dataclass
class Outcome:
    """One example's reply (or the error that prevented it) and its score."""

    record_id: str
    subject: str
    query: str
    # The material the program was given (the dataset's, or retrieved passages).
    context: str
    reference: str
    response: str
    latency_seconds: float
    error: str = ""
    score: PedagogicalScore | None = None
    failure: BaseException | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("failure", "score")
        }
        data["score"] = self.score.to_json() if self.score else None
        return data


def run_program(
    program: dspy.Module,
    examples: Sequence[dspy.Example],
    lm: dspy.BaseLM,
    adapter: dspy.Adapter,
    *,
    threads: int,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run `program` on every example, `threads` at a time, in example order.

    A failed example is kept with its error; if every example fails the first failure is raised (the
    LM is unreachable or refuses the request), and a cancellation always stops the run."""

    def one(example: dspy.Example) -> Outcome:
        started = time.perf_counter()
        response, failure = "", None
        try:
            with dspy.context(lm=lm, adapter=adapter):
                response = str(program(**example.inputs()).get("response") or "")
        except Exception as error:  # noqa: BLE001 - one bad reply must not sink the whole evaluation
            if isinstance(root_cause(error), Cancelled):
                raise root_cause(error) from None
            failure = error
        outcome = Outcome(
            record_id=example.get("record_id", ""),
            subject=example.get("subject", "") or "unknown",
            query=example.query,
            context=example.context,
            reference=example.response,
            response=response,
            latency_seconds=time.perf_counter() - started,
            error=describe_error(failure) if failure else "",
            failure=failure,
        )
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="tutor-eval") as pool:
        outcomes = list(pool.map(one, examples))
    if outcomes and all(outcome.failure for outcome in outcomes):
        raise as_domain_error(outcomes[0].failure, "every example failed; the first error")
    return outcomes


def score_outcomes(
    outcomes: list[Outcome],
    examples: Sequence[dspy.Example],
    weights: MetricWeights,
    embed: Embed | None,
) -> list[Outcome]:
    """Score every outcome in place (a failed reply scores 0); similarity is computed in one batch."""
    similarities: list[float | None] = [None] * len(outcomes)
    if embed is not None:
        answered = [i for i, outcome in enumerate(outcomes) if not outcome.error]
        values = cosine_similarities(
            embed, [outcomes[i].response for i in answered], [outcomes[i].reference for i in answered]
        )
        for index, value in zip(answered, values, strict=True):
            similarities[index] = value
    for outcome, example, similarity in zip(outcomes, examples, similarities, strict=True):
        outcome.score = score_response(
            outcome.response,
            context=example.context,
            reference=example.response,
            weights=weights,
            final_answer=example.get("final_answer", ""),
            similarity=similarity if embed is not None else None,
        )
        if outcome.error:
            outcome.score = replace(
                outcome.score, score=0.0, socratic=0.0, similarity=0.0 if embed is not None else None
            )
    return outcomes


@dataclass
class Summary:
    mean: float = 0.0
    min: float = 0.0
    max: float = 0.0
    std: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls()
        return cls(
            mean=statistics.fmean(values),
            min=min(values),
            max=max(values),
            std=statistics.pstdev(values) if len(values) > 1 else 0.0,
        )


@dataclass
class TargetMetrics:
    target: str
    examples: int
    errors: int
    pedagogical_score: float
    context_usage: float
    pedagogical_elements: float
    length_ratio: float
    socratic: float
    # Share of replies asking a question (as the datasets service counts it) / stating the final answer.
    question_rate: float
    answer_reveal_rate: float
    similarity: Summary
    mean_latency_seconds: float
    score_per_subject: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, target: str, outcomes: Sequence[Outcome]) -> TargetMetrics:
        scores = [outcome.score for outcome in outcomes if outcome.score is not None]

        def mean(values: list[float]) -> float:
            return statistics.fmean(values) if values else 0.0

        per_subject: dict[str, list[float]] = defaultdict(list)
        for outcome in outcomes:
            per_subject[outcome.subject].append(outcome.score.score if outcome.score else 0.0)
        answered = [outcome.score for outcome in outcomes if outcome.score is not None and not outcome.error]
        return cls(
            target=target,
            examples=len(outcomes),
            errors=sum(1 for outcome in outcomes if outcome.error),
            pedagogical_score=mean([s.score for s in scores]),
            context_usage=mean([s.context_usage for s in scores]),
            pedagogical_elements=mean([s.pedagogical_elements for s in scores]),
            length_ratio=mean([s.length_ratio for s in scores]),
            socratic=mean([s.socratic for s in scores]),
            question_rate=mean([float("?" in o.response) for o in outcomes if not o.error]),
            answer_reveal_rate=mean([float(s.reveals_answer) for s in answered]),
            similarity=Summary.of([s.similarity for s in answered if s.similarity is not None]),
            mean_latency_seconds=mean([o.latency_seconds for o in outcomes]),
            score_per_subject={subject: mean(values) for subject, values in sorted(per_subject.items())},
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetMetrics:
        return cls(**{**data, "similarity": Summary(**data["similarity"])})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sentence_embedder(settings: ModelSettings) -> Embed:
    """The platform's embedder (all-MiniLM-L6-v2 by default) as a batch function."""
    from tutorforge.core.models import load_embedder

    model = load_embedder(settings)
    return lambda texts: model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
