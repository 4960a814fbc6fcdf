"""The DSPy optimizers a run can use, as a registry: one entry per optimizer (its name, DSPy class, how one
budget maps to its arguments, which LMs and metric it needs). The proto enum, the CLI choices and the
docs' table are all read from `REGISTRY`, so adding an optimizer is one entry (plus its enum value in
optimization.proto). Also: a callback that turns DSPy's candidate evaluations into progress and keeps
the best candidate seen, for runs that stop early."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import dspy
from dspy.teleprompt import (
    COPRO,
    GEPA,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    MIPROv2,
)
from dspy.teleprompt.teleprompt import Teleprompter
from dspy.utils.callback import BaseCallback

from tutorforge.core.errors import InvalidArgument

# Above these a budget is a typo, not a plan: refused up front rather than left to run for days.
CEILINGS = {
    "trials": 1_000,
    "candidates": 100,
    "threads": 64,
    "max_bootstrapped_demos": 32,
    "max_labeled_demos": 32,
    "max_train_examples": 100_000,
    "max_validation_examples": 100_000,
    "max_lm_calls": 1_000_000,
    "max_lm_tokens": 1_000_000_000,
}


@dataclass
class Budget:
    """How much an optimizer may spend. 0 = the optimizer's small default (see each registry entry)."""

    # Rounds (bootstrap), trials (MIPROv2), depth (COPRO), full evaluations (GEPA), steps (SIMBA),
    # candidates (random search, when `candidates` is 0).
    trials: int = 0
    # Instruction candidates (COPRO breadth, MIPROv2), candidate programs (random search, SIMBA).
    candidates: int = 0
    threads: int = 4
    max_bootstrapped_demos: int = 0
    max_labeled_demos: int = 0
    # Caps on the examples drawn from the dataset; 0 = all.
    max_train_examples: int = 0
    max_validation_examples: int = 0
    # Caps on the LM calls and tokens (prompt + completion) the compilation may spend; 0 = no cap. When one is
    # reached the run stops early and keeps the best program found so far.
    max_lm_calls: int = 0
    max_lm_tokens: int = 0

    def __post_init__(self) -> None:
        values = asdict(self)
        negative = {name: value for name, value in values.items() if value < 0}
        if negative:
            raise InvalidArgument(f"budget values must be >= 0 (0 = default); got {negative}")
        absurd = {name: value for name, value in values.items() if value > CEILINGS[name]}
        if absurd:
            limits = {name: CEILINGS[name] for name in absurd}
            raise InvalidArgument(f"budget values {absurd} are above their ceilings {limits}")
        self.threads = self.threads or 4

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class CompileInputs:
    """What an optimizer entry turns into its DSPy arguments."""

    budget: Budget
    trainset: list[dspy.Example]
    valset: list[dspy.Example]
    metric: Callable[..., Any]
    seed: int
    lm: dspy.BaseLM
    # The instruction-writing / reflection LM (the run's own LM unless a stronger one is configured).
    reflection_lm: dspy.BaseLM

    @property
    def labeled(self) -> int:
        return self.budget.max_labeled_demos or 3

    @property
    def bootstrapped(self) -> int:
        return self.budget.max_bootstrapped_demos or 2


# (constructor keyword arguments, compile keyword arguments besides the student)
Arguments = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class OptimizerSpec:
    # CLI name and the name recorded in a program's lineage.
    name: str
    # Its value in optimization.proto's `Optimizer` enum.
    proto: str
    dspy_class: type[Teleprompter]
    summary: str
    # How `Budget` maps to the DSPy arguments, in words (docs, `--help`).
    budget_mapping: str
    arguments: Callable[[CompileInputs], Arguments]
    # Writes instructions with the reflection LM (settings.optimization.reflection_*).
    uses_reflection_lm: bool = False
    # Its metric returns dspy.Prediction(score, feedback) (GEPA).
    feedback_metric: bool = False

    def compile(self, student: dspy.Module, inputs: CompileInputs) -> dspy.Module:
        """Compile `student` (inside the caller's `dspy.context(lm=..., adapter=...)`)."""
        trainset = list(inputs.trainset)
        # The seed picks which examples the optimizers see first (LabeledFewShot always samples with seed 0).
        random.Random(inputs.seed).shuffle(trainset)
        init, compile_kwargs = self.arguments(replace(inputs, trainset=trainset))
        return self.dspy_class(**init).compile(student, **compile_kwargs)


def _labeled(i: CompileInputs) -> Arguments:
    return {"k": i.labeled}, {"trainset": i.trainset}


def _bootstrap(i: CompileInputs) -> Arguments:
    return (
        {
            "metric": i.metric,
            "max_bootstrapped_demos": i.bootstrapped,
            "max_labeled_demos": i.labeled,
            "max_rounds": i.budget.trials or 3,
        },
        {"trainset": i.trainset},
    )


def _random_search(i: CompileInputs) -> Arguments:
    return (
        {
            "metric": i.metric,
            "max_bootstrapped_demos": i.bootstrapped,
            "max_labeled_demos": i.labeled,
            "num_candidate_programs": i.budget.candidates or i.budget.trials or 2,
            "num_threads": i.budget.threads,
        },
        {"trainset": i.trainset, "valset": i.valset},
    )


def _copro(i: CompileInputs) -> Arguments:
    return (
        {
            "prompt_model": i.reflection_lm,
            "metric": i.metric,
            "breadth": max(2, i.budget.candidates or 2),
            "depth": i.budget.trials or 1,
            "init_temperature": 1.0,
        },
        {
            "trainset": i.trainset,
            "eval_kwargs": {"num_threads": i.budget.threads, "display_progress": False},
        },
    )


_MIPRO_MINIBATCH = 8


def _mipro(i: CompileInputs) -> Arguments:
    # auto="light" unless trials are given; DSPy refuses candidates/trials together with auto.
    explicit = bool(i.budget.trials)
    return (
        {
            "metric": i.metric,
            "prompt_model": i.reflection_lm,
            "task_model": i.lm,
            "auto": None if explicit else "light",
            "num_candidates": (i.budget.candidates or 3) if explicit else None,
            "num_threads": i.budget.threads,
            "max_bootstrapped_demos": i.bootstrapped,
            "max_labeled_demos": i.labeled,
            "seed": i.seed,
            "verbose": False,
            "track_stats": False,
        },
        {
            "trainset": i.trainset,
            "valset": i.valset,
            "num_trials": i.budget.trials if explicit else None,
            "minibatch": len(i.valset) > _MIPRO_MINIBATCH,
            "minibatch_size": _MIPRO_MINIBATCH,
        },
    )


def _gepa(i: CompileInputs) -> Arguments:
    return (
        {
            "metric": i.metric,
            "reflection_lm": i.reflection_lm,
            "max_full_evals": i.budget.trials or 1,
            "num_threads": i.budget.threads,
            "seed": i.seed,
            "track_stats": False,
            "use_merge": False,
        },
        {"trainset": i.trainset, "valset": i.valset},
    )


def _simba(i: CompileInputs) -> Arguments:
    return (
        {
            "metric": i.metric,
            # SIMBA refuses a mini-batch larger than the training set.
            "bsize": min(4, len(i.trainset)),
            "num_candidates": i.budget.candidates or 2,
            "max_steps": i.budget.trials or 2,
            "max_demos": i.bootstrapped,
            "prompt_model": i.reflection_lm,
            "num_threads": i.budget.threads,
        },
        {"trainset": i.trainset, "seed": i.seed},
    )


REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec(
            "labeled-fewshot",
            "OPTIMIZER_LABELED_FEW_SHOT",
            LabeledFewShot,
            "puts dataset examples in the prompt as demonstrations; no LM calls",
            "max_labeled_demos demos (3)",
            _labeled,
        ),
        OptimizerSpec(
            "bootstrap-fewshot",
            "OPTIMIZER_BOOTSTRAP_FEW_SHOT",
            BootstrapFewShot,
            "runs the program on training examples and keeps the replies the metric accepts as demos",
            "trials = rounds (3); max_bootstrapped_demos (2) + max_labeled_demos (3)",
            _bootstrap,
        ),
        OptimizerSpec(
            "bootstrap-random-search",
            "OPTIMIZER_BOOTSTRAP_FEW_SHOT_WITH_RANDOM_SEARCH",
            BootstrapFewShotWithRandomSearch,
            "bootstraps several demo sets and keeps the one scoring best on validation",
            "candidates (else trials) = candidate programs (2); demos as bootstrap-fewshot; threads",
            _random_search,
        ),
        OptimizerSpec(
            "copro",
            "OPTIMIZER_COPRO",
            COPRO,
            "the reflection LM rewrites the instructions, keeping the best on training examples",
            "candidates = breadth (2); trials = depth (1); threads",
            _copro,
            uses_reflection_lm=True,
        ),
        OptimizerSpec(
            "mipro",
            "OPTIMIZER_MIPRO_V2",
            MIPROv2,
            "proposes instructions (reflection LM) and demo sets, searched jointly (Bayesian optimization)",
            "auto='light' (6 candidates, 10 trials); trials > 0 = that many trials, candidates (3) instead; "
            "demos as bootstrap-fewshot; threads",
            _mipro,
            uses_reflection_lm=True,
        ),
        OptimizerSpec(
            "gepa",
            "OPTIMIZER_GEPA",
            GEPA,
            "evolves the instructions from the metric's written feedback with the reflection LM",
            "trials = full validation evaluations (1); threads",
            _gepa,
            uses_reflection_lm=True,
            feedback_metric=True,
        ),
        OptimizerSpec(
            "simba",
            "OPTIMIZER_SIMBA",
            SIMBA,
            "mini-batch ascent: the reflection LM adds rules or demos where replies vary most",
            "trials = steps (2); candidates per step (2); max_bootstrapped_demos = max demos (2); "
            "mini-batch min(4, train examples); threads",
            _simba,
            uses_reflection_lm=True,
        ),
    )
}
DEFAULT_OPTIMIZER = "bootstrap-fewshot"


def optimizer_spec(name: str) -> OptimizerSpec:
    """The registry entry called `name` (empty = the default); InvalidArgument names the known ones."""
    spec = REGISTRY.get(name or DEFAULT_OPTIMIZER)
    if spec is None:
        raise InvalidArgument(f"optimizer {name!r} is not known; use one of {', '.join(REGISTRY)}")
    return spec


def parameters(spec: OptimizerSpec, budget: Budget, seed: int, **extra: Any) -> dict[str, Any]:
    """The optimizer parameters recorded in a program's lineage."""
    return {"optimizer": spec.name, "budget": budget.to_json(), "seed": seed, **extra}


class TrialProgress(BaseCallback):
    """Counts DSPy's evaluations of candidate programs (one per trial), the best score among them, and keeps
    a copy of the best-scoring candidate: what a run stopped by its budget saves."""

    def __init__(self, report: Callable[[int, float], None]):
        self.trials = 0
        self.best = 0.0
        self.best_program: dspy.Module | None = None
        self._report = report
        self._lock = threading.Lock()
        self._evaluated: dict[str, dspy.Module] = {}

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        program = inputs.get("program")
        if isinstance(program, dspy.Module):
            # A copy: optimizers go on mutating their candidates after evaluating them.
            with self._lock:
                self._evaluated[call_id] = program.deepcopy()

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            program = self._evaluated.pop(call_id, None)
            if outputs is None or exception is not None:
                return
            self.trials += 1
            # dspy.Evaluate reports percentages.
            score = float(getattr(outputs, "score", 0.0)) / 100.0
            if program is not None and (self.best_program is None or score > self.best):
                self.best_program = program
            self.best = max(self.best, score)
            trials, best = self.trials, self.best
        self._report(trials, best)
