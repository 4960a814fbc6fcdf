"""Optimization runs and evaluations as durable jobs: validation of requests (synchronous, so bad input
fails the call), the work each job does, and reading back programs and reports."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dspy
import grpc
from dspy.utils.callback import BaseCallback

from tutorforge.core.adapters import AdapterRegistry
from tutorforge.core.errors import FailedPrecondition, InvalidArgument
from tutorforge.core.jobs import JobEvent, JobManager, JobRecord, JobReporter
from tutorforge.core.names import validate_name
from tutorforge.core.settings import Settings
from tutorforge.core.storage import ArtifactStore
from tutorforge.datasets.repository import DatasetInfo, DatasetRepository
from tutorforge.optimization.adapters import LmAdapterKind, make_adapter
from tutorforge.optimization.evaluation import (
    BASE,
    Outcome,
    Target,
    TargetMetrics,
    run_program,
    score_outcomes,
    sentence_embedder,
)
from tutorforge.optimization.lm import InferenceLM, LmUsage, as_domain_error
from tutorforge.optimization.metrics import Embed, MetricWeights
from tutorforge.optimization.optimizers import (
    Budget,
    OptimizerKind,
    TrialProgress,
    compile_program,
    parameters,
)
from tutorforge.optimization.program import (
    PedagogicalMetric,
    ProgramInfo,
    ProgramRepository,
    TutorProgram,
    examples_from_records,
)
from tutorforge.optimization.report import EvaluationReport, load_report, save_report
from tutorforge.v1 import retrieval_pb2, retrieval_pb2_grpc

DEFAULT_MAX_TOKENS = 128
_RESTART_HINT = "start it again (the program or report was not saved)"
# Progress events during compilation at most this often (each event rewrites the job's history).
_PROGRESS_INTERVAL_SECONDS = 2.0


@dataclass
class OptimizationRequest:
    name: str
    dataset: str
    dataset_version: str = ""
    optimizer: OptimizerKind = OptimizerKind.BOOTSTRAP_FEW_SHOT
    # LoRA adapter of the LM; empty = base model.
    adapter: str = ""
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    weights: MetricWeights = field(default_factory=MetricWeights)
    chain_of_thought: bool = False
    # None = plain for the default small model, DSPy's chat adapter for any other model.
    lm_adapter: LmAdapterKind | None = None
    # Reflection LM for GEPA: an adapter name or "base"; empty = settings.optimization.reflection_lm.
    reflection_adapter: str = ""
    max_tokens: int = 0
    # Replace each example's context by what the retrieval service finds for its query.
    use_retrieval: bool = False


@dataclass
class EvaluationRequest:
    dataset: str
    targets: list[str]
    dataset_version: str = ""
    weights: MetricWeights = field(default_factory=MetricWeights)
    # 0 = the whole validation split.
    max_examples: int = 0
    threads: int = 0
    # LM adapter of the "base" and "adapter:" targets; programs use the one they were optimized with.
    lm_adapter: LmAdapterKind | None = None
    max_tokens: int = 0
    use_retrieval: bool = False


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


class OptimizationRuns:
    """The optimization service's domain: runs, programs, evaluations."""

    def __init__(self, store: ArtifactStore, settings: Settings, channel: Callable[[str], grpc.Channel]):
        self.store = store
        self.settings = settings
        # channel("inference") / channel("retrieval"): the other services, as Runtime.channel gives them.
        self._channel = channel
        self.runs = JobManager(store, "optimization")
        self.evaluations = JobManager(store, "evaluation")
        self.programs = ProgramRepository(store)
        self.datasets = DatasetRepository(store)
        self.adapters = AdapterRegistry(store)
        self._embedder: Embed | None = None
        self._embedder_lock = threading.Lock()

    # ----- shared pieces

    def _embed(self) -> Embed:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = sentence_embedder(self.settings.models)
            return self._embedder

    def _default_lm_adapter(self) -> LmAdapterKind:
        return LmAdapterKind.PLAIN if self.settings.models.chat_model == "default" else LmAdapterKind.CHAT

    def _check_adapter(self, adapter: str, field_name: str) -> str:
        if adapter:
            self.adapters.get(validate_name(adapter, field_name))
        return adapter

    def _split(self, info: DatasetInfo, split: str, limit: int) -> list[dspy.Example]:
        return examples_from_records(self.datasets.records(info.name, info.version, split), limit)

    def _max_tokens(self, requested: int) -> int:
        limit = self.settings.inference.max_new_tokens_limit
        if requested < 0 or requested > limit:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {limit} (0 = {DEFAULT_MAX_TOKENS}); got {requested}"
            )
        return requested or DEFAULT_MAX_TOKENS

    def _lm(self, adapter: str, max_tokens: int, usage: LmUsage, reporter: JobReporter) -> InferenceLM:
        return InferenceLM(
            self._channel("inference"),
            adapter,
            max_tokens=max_tokens,
            usage=usage,
            before_call=reporter.check_cancelled,
        )

    def _retrieved(self, examples: list[dspy.Example], reporter: JobReporter) -> list[dspy.Example]:
        """The examples with their context replaced by the passages the retrieval service finds for the query."""
        stub = retrieval_pb2_grpc.RetrievalServiceStub(self._channel("retrieval"))
        grounded = []
        for example in examples:
            reporter.check_cancelled()
            try:
                # Threshold 0: the best passages ground the reply whatever their absolute score.
                search = retrieval_pb2.SearchRequest(
                    query=example.query, limit=self.settings.retrieval.default_limit, score_threshold=0.0
                )
                hits = stub.Search(search, timeout=120).hits
            except grpc.RpcError as error:
                raise as_domain_error(error, "retrieval for use_retrieval failed") from error
            grounded.append(example.copy(context="\n\n".join(hit.text for hit in hits)) if hits else example)
        return grounded

    def get_run(self, run_id: str) -> JobRecord:
        return self._manager(run_id).get(run_id)

    def watch_run(
        self, run_id: str, after_sequence: int, is_active: Callable[[], bool]
    ) -> Iterator[JobEvent]:
        return self._manager(run_id).watch(run_id, after_sequence, is_active)

    def cancel_run(self, run_id: str) -> JobRecord:
        return self._manager(run_id).request_cancel(run_id)

    def _manager(self, run_id: str) -> JobManager:
        # Job ids start with their kind ("opti-…", "eval-…").
        return self.evaluations if run_id.startswith(self.evaluations.kind[:4] + "-") else self.runs

    def recover_interrupted(self) -> None:
        self.runs.recover_interrupted(_RESTART_HINT)
        self.evaluations.recover_interrupted(_RESTART_HINT)

    # ----- optimization

    def start_optimization(self, request: OptimizationRequest) -> JobRecord:
        validate_name(request.name, "program name")
        info = self.datasets.get(validate_name(request.dataset, "dataset name"), request.dataset_version)
        self._check_adapter(request.adapter, "adapter")
        max_tokens = self._max_tokens(request.max_tokens)
        reflection = request.reflection_adapter or self.settings.optimization.reflection_lm
        if request.optimizer is OptimizerKind.GEPA:
            if not reflection:
                raise FailedPrecondition(
                    "GEPA needs a reflection LM: set settings.optimization.reflection_lm "
                    "(TUTORFORGE_OPTIMIZATION__REFLECTION_LM=base or an adapter name) or the request's "
                    "reflection_adapter (CLI --reflection-adapter)"
                )
            if reflection != BASE:
                self._check_adapter(reflection, "reflection adapter")
        budget = request.budget
        train = self._split(info, "train", budget.max_train_examples)
        validation = self._split(info, "validation", budget.max_validation_examples)
        if not validation and len(train) > 1:
            # A dataset without a validation split: hold out a quarter of the training examples.
            cut = max(1, len(train) // 4)
            train, validation = train[cut:], train[:cut]
        if not train or not validation:
            raise FailedPrecondition(
                f"dataset {info.name}@{info.version} has {len(train)} training and {len(validation)} validation examples "
                "with a student turn answered by the tutor; an optimization run needs at least one of each"
            )
        lm_adapter = request.lm_adapter or self._default_lm_adapter()
        record = self.runs.create(
            labels={
                "program": request.name,
                "dataset": info.name,
                "optimizer": request.optimizer.value,
                "adapter": request.adapter,
            },
            parameters={
                "name": request.name,
                "dataset": info.name,
                "dataset_version": info.version,
                "adapter": request.adapter,
                "lm_adapter": lm_adapter.value,
                "chain_of_thought": request.chain_of_thought,
                "weights": request.weights.to_json(),
                "max_tokens": max_tokens,
                "use_retrieval": request.use_retrieval,
                "train_examples": len(train),
                "validation_examples": len(validation),
                **parameters(request.optimizer, budget, request.seed),
                "reflection_adapter": reflection if request.optimizer is OptimizerKind.GEPA else "",
            },
        )

        def work(reporter: JobReporter) -> str:
            return self._optimize(
                reporter, record.id, request, info, train, validation, lm_adapter, max_tokens, reflection
            )

        self.runs.start(record.id, work)
        return record

    def _optimize(
        self,
        reporter: JobReporter,
        run_id: str,
        request: OptimizationRequest,
        info: DatasetInfo,
        train: list[dspy.Example],
        validation: list[dspy.Example],
        lm_adapter: LmAdapterKind,
        max_tokens: int,
        reflection: str,
    ) -> str:
        if request.use_retrieval:
            reporter.progress("retrieving context for the examples")
            train, validation = self._retrieved(train, reporter), self._retrieved(validation, reporter)
        usage = LmUsage()
        lm = self._lm(request.adapter, max_tokens, usage, reporter)
        adapter = make_adapter(lm_adapter)
        threads = request.budget.threads
        embed = self._embed() if request.weights.similarity > 0 else None
        # Steps: the baseline's replies, the compilation, the optimized program's replies.
        total = 2 * len(validation) + 1
        done = 0

        def scored(outcomes: list[Outcome]) -> float:
            score_outcomes(outcomes, validation, request.weights, embed)
            return statistics.fmean(o.score.score for o in outcomes)

        def example_done(phase: str, offset: int) -> Callable[[Outcome], None]:
            finished = 0
            lock = threading.Lock()

            def report(_outcome: Outcome) -> None:
                nonlocal finished, done
                with lock:
                    finished += 1
                    count = finished
                    done = offset + count
                reporter.progress(
                    f"{phase}: {count}/{len(validation)} validation replies",
                    step=offset + count,
                    total_steps=total,
                    metrics={"lm_calls": usage.calls, "lm_tokens": usage.total_tokens},
                )

            return report

        reporter.progress(
            f"scoring the unoptimized program on {len(validation)} validation examples",
            step=0,
            total_steps=total,
        )
        baseline = scored(
            run_program(
                TutorProgram(request.chain_of_thought),
                validation,
                lm,
                adapter,
                threads=threads,
                on_done=example_done("baseline", 0),
            )
        )
        reporter.progress(
            f"baseline score {baseline:.3f}; compiling with {request.optimizer.value}",
            step=done,
            total_steps=total,
            metrics={"baseline_score": baseline, "best_score": baseline},
        )

        throttled = _Throttled(reporter.progress)

        def trial_done(trial: int, best: float) -> None:
            throttled(
                f"trial {trial}: best candidate score {best:.3f}",
                step=done,
                total_steps=total,
                force=True,
                metrics={"trial": trial, "best_score": max(best, baseline), "lm_calls": usage.calls},
            )

        progress = TrialProgress(trial_done)

        class _Calls(BaseCallback):
            def on_lm_end(
                self, call_id: str, outputs: Any | None, exception: BaseException | None = None
            ) -> None:
                throttled(
                    f"compiling with {request.optimizer.value}: {usage.calls} LM calls",
                    step=done,
                    total_steps=total,
                    metrics={"lm_calls": usage.calls, "lm_tokens": usage.total_tokens},
                )

        metric = PedagogicalMetric(
            request.weights, embed, with_feedback=request.optimizer is OptimizerKind.GEPA
        )
        reflection_lm = None
        if request.optimizer is OptimizerKind.GEPA:
            reflection_lm = self._lm(
                "" if reflection == BASE else reflection, max(max_tokens, 256), usage, reporter
            )
        with dspy.context(lm=lm, adapter=adapter, callbacks=[progress, _Calls()]):
            compiled = compile_program(
                request.optimizer,
                TutorProgram(request.chain_of_thought),
                trainset=train,
                valset=validation,
                metric=metric,
                budget=request.budget,
                seed=request.seed,
                lm=lm,
                reflection_lm=reflection_lm,
            )
        # Optimizers swallow failed calls; a cancelled run ends here at the latest.
        reporter.check_cancelled()
        done = len(validation) + 1
        reporter.progress(
            "scoring the optimized program", step=done, total_steps=total, metrics={"trials": progress.trials}
        )
        optimized = scored(
            run_program(
                compiled,
                validation,
                lm,
                adapter,
                threads=threads,
                on_done=example_done("optimized", len(validation) + 1),
            )
        )
        program = self.programs.save(
            compiled,
            ProgramInfo(
                name=request.name,
                version="",
                optimizer=request.optimizer.value,
                dataset=info.name,
                dataset_version=info.version,
                adapter=request.adapter,
                lm_adapter=lm_adapter.value,
                chain_of_thought=request.chain_of_thought,
                baseline_score=baseline,
                optimized_score=optimized,
                lm_calls=usage.calls,
                lm_tokens=usage.total_tokens,
                parameters=self.runs.get(run_id).parameters,
                run_id=run_id,
            ),
        )
        reporter.progress(
            f"saved {program.name}@{program.version}: validation score {baseline:.3f} → {optimized:.3f}",
            step=total,
            total_steps=total,
            metrics={
                "baseline_score": baseline,
                "optimized_score": optimized,
                "best_score": max(baseline, optimized),
                "lm_calls": usage.calls,
                "lm_tokens": usage.total_tokens,
            },
        )
        return f"{program.name}@{program.version}"

    # ----- programs

    def list_programs(self) -> list[ProgramInfo]:
        return self.programs.list()

    def get_program(self, name: str, version: str = "") -> tuple[ProgramInfo, dict[str, Any]]:
        info = self.programs.get(name, version)
        return info, self.programs.state(info)

    # ----- evaluation

    def evaluate(self, request: EvaluationRequest) -> JobRecord:
        if not request.targets:
            raise InvalidArgument(
                "give at least one target: 'base', 'adapter:NAME' or 'program:NAME[@ADAPTER]'"
            )
        targets = [Target.parse(spec) for spec in request.targets]
        duplicates = sorted({t.spec for t in targets if [u.spec for u in targets].count(t.spec) > 1})
        if duplicates:
            raise InvalidArgument(f"targets must be distinct; repeated: {', '.join(duplicates)}")
        for target in targets:
            if target.kind == "program":
                self.programs.get(target.program)
            if target.adapter:
                self._check_adapter(target.adapter, "adapter")
        if request.max_examples < 0 or request.threads < 0:
            raise InvalidArgument("max_examples and threads must be >= 0")
        max_tokens = self._max_tokens(request.max_tokens)
        info = self.datasets.get(validate_name(request.dataset, "dataset name"), request.dataset_version)
        examples = self._split(info, "validation", request.max_examples)
        if not examples:
            raise FailedPrecondition(
                f"dataset {info.name}@{info.version} has no validation examples (a student turn answered by the tutor) "
                "to evaluate on: build it with a validation split (e.g. `tutorforge dataset build ... --validation-fraction 0.2`)"
            )
        record = self.evaluations.create(
            labels={"dataset": info.name, "targets": ",".join(t.spec for t in targets)},
            parameters={
                "dataset": info.name,
                "dataset_version": info.version,
                "targets": [t.spec for t in targets],
                "weights": request.weights.to_json(),
                "examples": len(examples),
                "max_tokens": max_tokens,
                "use_retrieval": request.use_retrieval,
                "threads": request.threads or self.settings.optimization.threads,
            },
        )

        def work(reporter: JobReporter) -> str:
            return self._evaluate(reporter, record.id, request, info, targets, examples, max_tokens)

        self.evaluations.start(record.id, work)
        return record

    def _resolve(
        self, target: Target, default_lm_adapter: LmAdapterKind
    ) -> tuple[TutorProgram, str, LmAdapterKind]:
        """The program, LoRA adapter and LM adapter a target answers with."""
        if target.kind == "program":
            info, program = self.programs.load(target.program)
            adapter = info.adapter if target.adapter is None else target.adapter
            return program, adapter, LmAdapterKind(info.lm_adapter)
        return TutorProgram(), target.adapter or "", default_lm_adapter

    def _evaluate(
        self,
        reporter: JobReporter,
        evaluation_id: str,
        request: EvaluationRequest,
        info: DatasetInfo,
        targets: list[Target],
        examples: list[dspy.Example],
        max_tokens: int,
    ) -> str:
        embed = self._embed()
        if request.use_retrieval:
            reporter.progress("retrieving context for the examples")
            examples = self._retrieved(examples, reporter)
        threads = request.threads or self.settings.optimization.threads
        total = len(targets) * len(examples)
        done = 0
        done_lock = threading.Lock()
        results: list[TargetMetrics] = []
        details: dict[str, list[dict[str, Any]]] = {}
        for target in targets:
            program, adapter, lm_adapter = self._resolve(
                target, request.lm_adapter or self._default_lm_adapter()
            )
            usage = LmUsage()
            lm = self._lm(adapter, max_tokens, usage, reporter)

            def example_done(_outcome: Outcome, spec: str = target.spec) -> None:
                nonlocal done
                with done_lock:
                    done += 1
                    step = done
                reporter.progress(f"{spec}: {step}/{total} replies", step=step, total_steps=total)

            outcomes = run_program(
                program, examples, lm, make_adapter(lm_adapter), threads=threads, on_done=example_done
            )
            score_outcomes(outcomes, examples, request.weights, embed)
            metrics = TargetMetrics.of(target.spec, outcomes)
            results.append(metrics)
            details[target.spec] = [outcome.to_json() for outcome in outcomes]
            reporter.progress(
                f"{target.spec}: score {metrics.pedagogical_score:.3f}",
                step=done,
                total_steps=total,
                metrics={f"score[{target.spec}]": metrics.pedagogical_score},
            )
        report = save_report(
            self.store,
            EvaluationReport(
                evaluation_id=evaluation_id,
                dataset=info.name,
                dataset_version=info.version,
                weights=request.weights.to_json(),
                targets=results,
                examples=details,
            ),
        )
        return report.evaluation_id

    def evaluation_report(self, evaluation_id: str) -> EvaluationReport:
        return load_report(self.store, evaluation_id)
