"""The DSPy optimizers a run can use, built from one budget, and a callback that turns DSPy's candidate
evaluations into progress (trial, best score)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import dspy
from dspy.teleprompt import (
    COPRO,
    GEPA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    MIPROv2,
)
from dspy.utils.callback import BaseCallback

from tutorforge.core.errors import InvalidArgument
from tutorforge.optimization.program import PedagogicalMetric, TutorProgram


class OptimizerKind(str, Enum):
    LABELED_FEW_SHOT = "labeled-fewshot"
    BOOTSTRAP_FEW_SHOT = "bootstrap-fewshot"
    BOOTSTRAP_RANDOM_SEARCH = "bootstrap-random-search"
    COPRO = "copro"
    MIPRO = "mipro"
    GEPA = "gepa"


@dataclass
class Budget:
    """How much an optimizer may spend. 0 = the optimizer's small default below."""

    # Rounds (bootstrap), trials (MIPROv2), depth (COPRO), full evaluations (GEPA), candidates (random search).
    trials: int = 0
    # Instruction candidates (COPRO breadth, MIPROv2), or candidate programs (random search).
    candidates: int = 0
    threads: int = 4
    max_bootstrapped_demos: int = 0
    max_labeled_demos: int = 0
    # Caps on the examples drawn from the dataset; 0 = all.
    max_train_examples: int = 0
    max_validation_examples: int = 0

    def __post_init__(self) -> None:
        negative = {name: value for name, value in asdict(self).items() if value < 0}
        if negative:
            raise InvalidArgument(f"budget values must be >= 0; got {negative}")
        self.threads = self.threads or 4

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def compile_program(
    kind: OptimizerKind,
    student: TutorProgram,
    *,
    trainset: list[dspy.Example],
    valset: list[dspy.Example],
    metric: PedagogicalMetric,
    budget: Budget,
    seed: int,
    lm: dspy.BaseLM,
    reflection_lm: dspy.BaseLM | None = None,
) -> TutorProgram:
    """Compile `student` with the chosen optimizer (inside the caller's `dspy.context(lm=..., adapter=...)`)."""
    trainset = list(trainset)
    # The seed picks which examples the optimizers see first (LabeledFewShot always samples with seed 0).
    random.Random(seed).shuffle(trainset)
    labeled = budget.max_labeled_demos or 3
    bootstrapped = budget.max_bootstrapped_demos or 2
    if kind is OptimizerKind.LABELED_FEW_SHOT:
        return LabeledFewShot(k=labeled).compile(student, trainset=trainset)
    if kind is OptimizerKind.BOOTSTRAP_FEW_SHOT:
        optimizer = BootstrapFewShot(
            metric=metric,
            max_bootstrapped_demos=bootstrapped,
            max_labeled_demos=labeled,
            max_rounds=budget.trials or 1,
        )
        return optimizer.compile(student, trainset=trainset)
    if kind is OptimizerKind.BOOTSTRAP_RANDOM_SEARCH:
        optimizer = BootstrapFewShotWithRandomSearch(
            metric=metric,
            max_bootstrapped_demos=bootstrapped,
            max_labeled_demos=labeled,
            num_candidate_programs=budget.candidates or budget.trials or 2,
            num_threads=budget.threads,
        )
        return optimizer.compile(student, trainset=trainset, valset=valset)
    if kind is OptimizerKind.COPRO:
        optimizer = COPRO(
            prompt_model=lm,
            metric=metric,
            breadth=max(2, budget.candidates or 2),
            depth=budget.trials or 1,
            init_temperature=1.0,
        )
        return optimizer.compile(
            student, trainset=trainset, eval_kwargs={"num_threads": budget.threads, "display_progress": False}
        )
    if kind is OptimizerKind.MIPRO:
        optimizer = MIPROv2(
            metric=metric,
            prompt_model=lm,
            task_model=lm,
            auto=None,
            num_candidates=budget.candidates or 2,
            num_threads=budget.threads,
            max_bootstrapped_demos=bootstrapped,
            max_labeled_demos=labeled,
            seed=seed,
            verbose=False,
            track_stats=False,
        )
        return optimizer.compile(
            student,
            trainset=trainset,
            valset=valset,
            num_trials=budget.trials or 2,
            minibatch=len(valset) > 8,
            minibatch_size=8,
        )
    if kind is OptimizerKind.GEPA:
        if reflection_lm is None:
            raise InvalidArgument("GEPA needs a reflection LM")
        optimizer = GEPA(
            metric=metric,
            reflection_lm=reflection_lm,
            max_full_evals=budget.trials or 1,
            num_threads=budget.threads,
            seed=seed,
            track_stats=False,
            use_merge=False,
        )
        return optimizer.compile(student, trainset=trainset, valset=valset)
    raise InvalidArgument(f"optimizer {kind!r} is not known")


def parameters(kind: OptimizerKind, budget: Budget, seed: int, **extra: Any) -> dict[str, Any]:
    """The optimizer parameters recorded in a program's lineage."""
    return {"optimizer": kind.value, "budget": budget.to_json(), "seed": seed, **extra}


class TrialProgress(BaseCallback):
    """Counts DSPy's evaluations of candidate programs (one per trial) and the best score among them."""

    def __init__(self, report: Callable[[int, float], None]):
        self.trials = 0
        self.best = 0.0
        self._report = report

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        if outputs is None or exception is not None:
            return
        self.trials += 1
        # dspy.Evaluate reports percentages.
        self.best = max(self.best, float(getattr(outputs, "score", 0.0)) / 100.0)
        self._report(self.trials, self.best)
