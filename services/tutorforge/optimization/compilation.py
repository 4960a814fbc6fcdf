"""One optimization run, step by step: score the unoptimized program on the validation turns, pick the
decoding it answers best with (the frequency penalties asked for), compile a better program with the
chosen optimizer within the run's LM budget, then score what it found. Every reply is
answered through chat, as it will be served. `runs.py` validates the request, builds the run's LMs and
saves the program."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dspy
from dspy.utils.callback import BaseCallback

from tutorforge.artifacts.programs import TeachingProgram
from tutorforge.core.jobs import JobReporter
from tutorforge.optimization.evaluation import Outcome, answer_turns, score_outcomes
from tutorforge.optimization.judge import JudgeMetric
from tutorforge.optimization.lm import InferenceLM, LmUsage, TutorClient
from tutorforge.optimization.metrics import Embed
from tutorforge.optimization.optimizers import CompileInputs, OptimizerSpec, TrialProgress
from tutorforge.optimization.program import PedagogicalMetric, TutorProgram
from tutorforge.optimization.turns import TutorTurn

if TYPE_CHECKING:
    from tutorforge.optimization.runs import OptimizationRequest

# Progress events during compilation at most this often (each event rewrites the job's history).
_PROGRESS_INTERVAL_SECONDS = 2.0


class CostReporter:
    """A run's reporter whose every progress event also carries the run's cost so far (for WatchJob)."""

    def __init__(self, reporter: JobReporter, usage: LmUsage):
        self._reporter = reporter
        self._usage = usage
        self._started = time.monotonic()
        # Reports come from the optimizers' threads: one at a time, so the cost in the events only grows.
        self._lock = threading.Lock()

    def check_cancelled(self) -> None:
        self._reporter.check_cancelled()

    def progress(self, message: str = "", *, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        with self._lock:
            cost = {
                "lm_calls": self._usage.calls,
                "lm_tokens": self._usage.total_tokens,
                "elapsed_seconds": round(time.monotonic() - self._started, 1),
            }
            # The cost read here wins over one a caller read earlier.
            self._reporter.progress(message, metrics={**(metrics or {}), **cost}, **kwargs)


class _Throttled:
    """Calls `report` at most every few seconds (always for `force`)."""

    def __init__(self, report: Callable[..., None]):
        self._report = report
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, force: bool = False, **kwargs: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < _PROGRESS_INTERVAL_SECONDS:
                return
            self._last = now
        self._report(*args, **kwargs)


class Optimization:
    """The working parts of one run: its LM (the inference service with the run's adapter, every call
    counted in `usage`), the scoring of programs on the validation turns, and its progress. Its steps are
    the baseline's replies, the compilation (one step) and the optimized program's replies."""

    def __init__(
        self,
        reporter: CostReporter,
        tutor: TutorClient,
        request: OptimizationRequest,
        validation: list[TutorTurn],
        spec: OptimizerSpec,
        *,
        max_tokens: int,
        base_model: str,
        embed: Embed | None,
        judge: JudgeMetric | None,
    ):
        self.reporter = reporter
        self.tutor = tutor
        self.usage = tutor.usage
        self.request = request
        self.validation = validation
        self.spec = spec
        self.max_tokens = max_tokens
        self.base_model = base_model
        self.embed = embed
        self.judge = judge
        self.lm = InferenceLM(tutor, request.adapter, max_tokens=max_tokens, retrieval=request.use_retrieval)
        # Penalties to try besides none (choose_decoding); the run's programs answer with the chosen one.
        self.penalties = [p for p in dict.fromkeys(request.frequency_penalties) if p != 0.0]
        self.total = (2 + len(self.penalties)) * len(validation) + 1
        self.done = 0
        self.trials = 0

    # ----- the steps, in order

    def score_baseline(self) -> float:
        self.reporter.progress(
            f"scoring the unoptimized program on {len(self.validation)} validation examples",
            step=0,
            total_steps=self.total,
        )
        baseline = self._score(TutorProgram(), "baseline", 0)
        self.reporter.progress(
            f"baseline score {baseline:.3f}; "
            + (f"trying {len(self.penalties)} frequency penalties" if self.penalties else f"compiling with {self.spec.name}"),
            step=self.done,
            total_steps=self.total,
            metrics={"baseline_score": baseline, "best_score": baseline},
        )
        return baseline

    def choose_decoding(self, baseline: float) -> float:
        """Score the unoptimized program with each frequency penalty asked for and keep the best (none when
        nothing beats it): a small model's greedy replies loop, and demonstrations are then bootstrapped,
        and the program saved, with the penalty it answers best with. Returns the score at that penalty."""
        best, chosen = baseline, 0.0
        for penalty in self.penalties:
            score = self._score(TutorProgram(), f"frequency penalty {penalty:g}", self.done, frequency_penalty=penalty)
            if score > best:
                best, chosen = score, penalty
            self.reporter.progress(
                f"frequency penalty {penalty:g}: score {score:.3f}",
                step=self.done,
                total_steps=self.total,
                metrics={f"score_frequency_penalty_{penalty:g}": score, "best_score": best},
            )
        self.lm.frequency_penalty = chosen
        if self.penalties:
            self.reporter.progress(
                f"decoding: frequency penalty {chosen:g} (score {best:.3f}); compiling with {self.spec.name}",
                step=self.done,
                total_steps=self.total,
                metrics={"frequency_penalty": chosen, "best_score": best},
            )
        return best

    def compile(
        self, train: list[TutorTurn], lm_format: dspy.Adapter, reflection_lm: dspy.BaseLM | None, baseline: float
    ) -> TutorProgram:
        """The optimizer's best program within the budget (`lm_format`: how its own prompts reach the LM);
        a search stopped by the budget keeps the best candidate evaluated so far, else the seed program."""
        request, usage = self.request, self.usage
        throttled = _Throttled(self.reporter.progress)
        progress = TrialProgress(lambda trial, best: throttled(
            f"trial {trial}: best candidate score {best:.3f}",
            step=self.done,
            total_steps=self.total,
            force=True,
            metrics={"trial": trial, "best_score": max(best, baseline), "lm_calls": usage.calls},
        ))
        run = self

        class _Calls(BaseCallback):
            def on_lm_end(
                self, call_id: str, outputs: Any | None, exception: BaseException | None = None
            ) -> None:
                throttled(
                    f"compiling with {run.spec.name}: {usage.calls} LM calls",
                    step=run.done,
                    total_steps=run.total,
                    metrics={"lm_calls": usage.calls, "lm_tokens": usage.total_tokens},
                )

        # Demonstrations must beat the unoptimized program's typical reply (its validation mean).
        metric = self.judge or PedagogicalMetric(
            request.weights, self.embed, with_feedback=self.spec.feedback_metric, demo_bar=baseline
        )
        student = TutorProgram()
        inputs = CompileInputs(
            budget=request.budget,
            trainset=[turn.example() for turn in train],
            valset=[turn.example() for turn in self.validation],
            metric=metric,
            seed=request.seed,
            lm=self.lm,
            reflection_lm=reflection_lm or self.lm,
        )
        # The budget caps the compilation; the baseline and the final scoring are fixed costs.
        usage.limit(request.budget.max_lm_calls, request.budget.max_lm_tokens)
        try:
            with dspy.context(lm=self.lm, adapter=lm_format, callbacks=[progress, _Calls()]):
                compiled = self.spec.compile(student, inputs)
        except Exception:
            if not usage.exhausted:
                raise
            # Stopped by the budget mid-search: the best candidate evaluated so far, else the seed program.
            compiled = progress.best_program or student
        finally:
            usage.limit()
        if usage.exhausted:
            self.reporter.progress(f"{usage.exhausted}: stopping early with the best program found so far")
        # Optimizers swallow failed calls; a cancelled run ends here at the latest.
        self.reporter.check_cancelled()
        self.trials = progress.trials
        return compiled

    def score_optimized(self, compiled: TutorProgram) -> float:
        offset = (1 + len(self.penalties)) * len(self.validation) + 1
        self.done = offset
        self.reporter.progress(
            "scoring the optimized program", step=self.done, total_steps=self.total, metrics={"trials": self.trials}
        )
        return self._score(compiled, "optimized", offset)

    # ----- scoring

    def teaching(self, program: TutorProgram, frequency_penalty: float | None = None) -> TeachingProgram:
        """`program` as chat serves it: with the run's adapter, base model, reply length and decoding."""
        return program.to_teaching(
            adapter=self.request.adapter,
            base_model=self.base_model,
            max_tokens=self.max_tokens,
            frequency_penalty=self.lm.frequency_penalty if frequency_penalty is None else frequency_penalty,
        )

    def _score(self, program: TutorProgram, phase: str, offset: int, frequency_penalty: float | None = None) -> float:
        """The program's mean score on the validation turns, answered through chat as it will be served."""
        request = self.request
        outcomes = answer_turns(
            self.tutor,
            self.validation,
            adapter=request.adapter,
            program=self.teaching(program, frequency_penalty),
            retrieval=request.use_retrieval,
            max_tokens=self.max_tokens,
            threads=request.budget.threads,
            on_done=self._reply_done(phase, offset),
        )
        score_outcomes(outcomes, request.weights, self.embed)
        if self.judge is not None:
            # The run maximises the judge's score: it is the one recorded (the heuristic stays per reply).
            return statistics.fmean(
                self.judge.judge(
                    o.turn.query,
                    "\n\n".join(p.text for p in o.passages) or o.turn.context,
                    o.response,
                    o.turn.final_answer,
                ).score
                for o in outcomes
            )
        return statistics.fmean(o.score.score for o in outcomes)

    def _reply_done(self, phase: str, offset: int) -> Callable[[Outcome], None]:
        finished = 0
        lock = threading.Lock()

        def report(_outcome: Outcome) -> None:
            nonlocal finished
            with lock:
                finished += 1
                count = finished
                self.done = offset + count
            self.reporter.progress(
                f"{phase}: {count}/{len(self.validation)} validation replies",
                step=offset + count,
                total_steps=self.total,
                metrics={"lm_calls": self.usage.calls, "lm_tokens": self.usage.total_tokens},
            )

        return report
