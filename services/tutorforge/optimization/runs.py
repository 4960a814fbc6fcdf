"""Optimization runs and evaluations as durable jobs: validation of requests (synchronous, so bad input
fails the call), the work each job does, and reading back programs and reports."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dspy
import grpc
from dspy.utils.callback import BaseCallback

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.programs import ProgramInfo, ProgramRepository
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import FailedPrecondition, InvalidArgument
from tutorforge.core.jobs import JobDirectory, JobManager, JobRecord, JobReporter
from tutorforge.core.names import BASE, validate_name
from tutorforge.core.settings import LmEndpoint, Settings
from tutorforge.core.telemetry.experiments import tracked_job
from tutorforge.optimization.evaluation import (
    Outcome,
    Target,
    TargetMetrics,
    answer_turns,
    score_outcomes,
    sentence_embedder,
)
from tutorforge.optimization.formats import LmFormatKind, make_format
from tutorforge.optimization.judge import JudgeMetric, configured_lm, probe
from tutorforge.optimization.lm import InferenceLM, LmUsage, TutorClient, as_domain_error
from tutorforge.optimization.metrics import Embed, MetricWeights
from tutorforge.optimization.optimizers import (
    DEFAULT_OPTIMIZER,
    Budget,
    CompileInputs,
    OptimizerSpec,
    TrialProgress,
    optimizer_spec,
    parameters,
)
from tutorforge.optimization.program import PedagogicalMetric, TutorProgram
from tutorforge.optimization.promotion import Promotion, promote
from tutorforge.optimization.report import EvaluationReport, load_report, save_report
from tutorforge.optimization.turns import EVALUATION_SETS, TutorTurn, benchmark_turns, turns_from_records
from tutorforge.v1 import inference_pb2, inference_pb2_grpc

DEFAULT_MAX_TOKENS = 128
_RESTART_HINT = "start it again (the program or report was not saved)"
# Progress events during compilation at most this often (each event rewrites the job's history).
_PROGRESS_INTERVAL_SECONDS = 2.0


@dataclass
class OptimizationRequest:
    name: str
    dataset: str
    dataset_version: str = ""
    # A name in optimizers.REGISTRY.
    optimizer: str = DEFAULT_OPTIMIZER
    # "pedagogical" (the heuristic score) or "judge" (the LLM-judge rubric).
    metric: str = "pedagogical"
    # LoRA adapter of the LM; empty = base model.
    adapter: str = ""
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    weights: MetricWeights = field(default_factory=MetricWeights)
    # How the optimizers' own prompts (instruction proposals, reflections) reach the LM; None = plain for
    # the default small model, DSPy's chat adapter for any other. Teaching turns always go through chat.
    lm_format: LmFormatKind | None = None
    # Reflection LM of the optimizers that write instructions: an adapter name or "base" on the inference
    # service; empty = settings.optimization.reflection_lm (or its reflection_endpoint).
    reflection_adapter: str = ""
    max_tokens: int = 0
    # Ground every teaching turn on retrieved passages, as chat does.
    use_retrieval: bool = True


@dataclass
class EvaluationRequest:
    targets: list[str]
    # A dataset's validation split, or a bundled evaluation set (turns.EVALUATION_SETS); exactly one.
    dataset: str = ""
    dataset_version: str = ""
    evaluation_set: str = ""
    weights: MetricWeights = field(default_factory=MetricWeights)
    # 0 = every turn.
    max_examples: int = 0
    threads: int = 0
    max_tokens: int = 0
    use_retrieval: bool = True


class _CostReporter:
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


class OptimizationRuns:
    """The optimization service's domain: runs, programs, evaluations."""

    def __init__(self, store: ArtifactStore, settings: Settings, channel: Callable[[str], grpc.Channel]):
        self.store = store
        self.settings = settings
        # channel("inference") / channel("retrieval"): the other services, as Runtime.channel gives them.
        self._channel = channel
        lease = settings.jobs.lease_seconds
        self.runs = JobManager(store, "optimization", lease_seconds=lease)
        self.evaluations = JobManager(store, "evaluation", lease_seconds=lease)
        self.job_directory = JobDirectory(self.runs, self.evaluations)
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

    def _default_lm_format(self) -> LmFormatKind:
        return LmFormatKind.PLAIN if self.settings.models.chat_model == "default" else LmFormatKind.CHAT

    def _check_adapter(self, adapter: str, field_name: str) -> str:
        if adapter:
            self.adapters.get(validate_name(adapter, field_name))
        return adapter

    def _split(self, info: DatasetInfo, split: str, limit: int, seed: int = 0) -> list[TutorTurn]:
        return turns_from_records(self.datasets.records(info.name, info.version, split), limit, seed)

    def _max_tokens(self, requested: int) -> int:
        limit = self.settings.inference.max_new_tokens_limit
        if requested < 0 or requested > limit:
            raise InvalidArgument(
                f"max_tokens must be between 1 and {limit} (0 = {DEFAULT_MAX_TOKENS}); got {requested}"
            )
        return requested or DEFAULT_MAX_TOKENS

    def _tutor(self, usage: LmUsage, reporter: JobReporter) -> TutorClient:
        def before_call() -> None:
            reporter.check_cancelled()
            usage.check()

        return TutorClient(self._channel("inference"), usage=usage, before_call=before_call)

    def _base_model(self) -> str:
        """The inference service's base model (programs record it; chat refuses a program for another)."""
        stub = inference_pb2_grpc.InferenceServiceStub(self._channel("inference"))
        try:
            return stub.ListAdapters(inference_pb2.ListAdaptersRequest(), timeout=60).base_model
        except grpc.RpcError as error:
            raise as_domain_error(error, "the inference service is needed to compile and evaluate programs") from error

    def recover_interrupted(self) -> None:
        self.runs.recover_interrupted(_RESTART_HINT)
        self.evaluations.recover_interrupted(_RESTART_HINT)

    # ----- optimization

    def start_optimization(self, request: OptimizationRequest) -> JobRecord:
        validate_name(request.name, "program name")
        # Fields of the request first, then what they refer to (the dataset, the adapter).
        max_tokens = self._max_tokens(request.max_tokens)
        info = self.datasets.get(validate_name(request.dataset, "dataset name"), request.dataset_version)
        self._check_adapter(request.adapter, "adapter")
        spec = optimizer_spec(request.optimizer)
        budget = request.budget
        train = self._split(info, "train", budget.max_train_examples, request.seed)
        validation = self._split(info, "validation", budget.max_validation_examples, request.seed)
        if not validation and len(train) > 1:
            # A dataset without a validation split: hold out a quarter of the training examples.
            cut = max(1, len(train) // 4)
            train, validation = train[cut:], train[:cut]
        if not train or not validation:
            raise FailedPrecondition(
                f"dataset {info.name}@{info.version} has {len(train)} training and {len(validation)} validation examples "
                "with a student turn answered by the tutor; an optimization run needs at least one of each"
            )
        # Last: these may call the LMs (a one-token probe each).
        reflection, reflection_endpoint = self._reflection_lm_source(spec, request.reflection_adapter)
        self._check_metric(request.metric)
        lm_format = request.lm_format or self._default_lm_format()
        record = self.runs.create(
            labels={
                "program": request.name,
                "dataset": info.name,
                "optimizer": spec.name,
                "adapter": request.adapter,
            },
            parameters={
                "name": request.name,
                "dataset": info.name,
                "dataset_version": info.version,
                "adapter": request.adapter,
                "lm_format": lm_format.value,
                "weights": request.weights.to_json(),
                "max_tokens": max_tokens,
                "use_retrieval": request.use_retrieval,
                "train_examples": len(train),
                "validation_examples": len(validation),
                **parameters(spec, budget, request.seed),
                "metric": request.metric,
                "reflection_lm": reflection_endpoint.url or reflection,
            },
        )

        def work(reporter: JobReporter) -> str:
            with tracked_job(self.settings, self.runs, reporter, record.parameters) as tracked:
                reference = self._optimize(
                    tracked,
                    record.id,
                    request,
                    info,
                    train,
                    validation,
                    lm_format,
                    max_tokens,
                    spec,
                    reflection,
                    reflection_endpoint,
                )
                name, _, version = reference.partition("@")
                document = self.get_program(name, version)[1]
                tracked.run.log_artifact("program.json", json.dumps(document, indent=2, default=str).encode())
            return reference

        self.runs.start(record.id, work)
        return record

    def _reflection_lm_source(self, spec: OptimizerSpec, requested: str) -> tuple[str, LmEndpoint]:
        """The reflection LM an optimizer will use: an adapter on the inference service ("base" = the base
        model) or a configured endpoint, checked now so a run never fails later for it. ("", none) when the
        optimizer uses none."""
        config = self.settings.optimization
        if not spec.uses_reflection_lm:
            return "", LmEndpoint()
        # A reflection adapter in the request overrides the configured endpoint.
        if config.reflection_endpoint.url and not requested:
            probe(
                self._configured_lm("", config.reflection_endpoint, config.reflection_max_tokens),
                f"the reflection LM at {config.reflection_endpoint.url}",
                "fix settings.optimization.reflection_endpoint "
                "(TUTORFORGE_OPTIMIZATION__REFLECTION_ENDPOINT__URL), "
                "or unset its url to reflect with the platform's own model",
            )
            return "", config.reflection_endpoint
        reflection = requested or config.reflection_lm or BASE
        if reflection != BASE:
            self._check_adapter(reflection, "reflection adapter")
        return reflection, LmEndpoint()

    def _check_metric(self, metric: str) -> None:
        """Known metric; for the judge, a reachable judge LM."""
        if metric == "pedagogical":
            return
        if metric != "judge":
            raise InvalidArgument(f"metric {metric!r} is not known; use pedagogical or judge")
        config = self.settings.optimization
        if not config.judge_endpoint.url and config.judge_lm not in ("", BASE):
            self._check_adapter(config.judge_lm, "judge_lm (settings.optimization.judge_lm)")
        where = config.judge_endpoint.url or f"the inference service ({config.judge_lm or BASE})"
        probe(
            self._judge_lm(),
            f"the judge LM at {where}",
            "fix settings.optimization.judge_endpoint (TUTORFORGE_OPTIMIZATION__JUDGE_ENDPOINT__URL) or "
            "judge_lm, or optimize with the pedagogical metric",
        )

    def _configured_lm(
        self, adapter: str, endpoint: LmEndpoint, max_tokens: int, tutor: TutorClient | None = None
    ) -> dspy.BaseLM:
        """`tutor` = the run's client (its usage and stop checks); None = a fresh one (request checks)."""
        tutor = tutor or TutorClient(self._channel("inference"))
        return configured_lm(adapter, endpoint, tutor, max_tokens)

    def _judge_lm(self, tutor: TutorClient | None = None) -> dspy.BaseLM:
        config = self.settings.optimization
        return self._configured_lm(config.judge_lm, config.judge_endpoint, config.judge_max_tokens, tutor)

    def _optimize(
        self,
        reporter: JobReporter,
        run_id: str,
        request: OptimizationRequest,
        info: DatasetInfo,
        train: list[TutorTurn],
        validation: list[TutorTurn],
        lm_format: LmFormatKind,
        max_tokens: int,
        spec: OptimizerSpec,
        reflection: str,
        reflection_endpoint: LmEndpoint,
    ) -> str:
        usage = LmUsage()
        reporter = _CostReporter(reporter, usage)
        tutor = self._tutor(usage, reporter)
        base_model = self._base_model()
        lm = InferenceLM(tutor, request.adapter, max_tokens=max_tokens, retrieval=request.use_retrieval)
        adapter = make_format(lm_format)
        threads = request.budget.threads
        embed = self._embed() if request.weights.similarity > 0 else None
        # Steps: the baseline's replies, the compilation, the optimized program's replies.
        total = 2 * len(validation) + 1
        done = 0

        judge = None
        if request.metric == "judge":
            judge = JudgeMetric(self._judge_lm(tutor), with_feedback=spec.feedback_metric)

        def scored(program: TutorProgram, on_done: Callable[[Outcome], None]) -> float:
            """The program's mean score on the validation turns, answered through chat as it will be served."""
            outcomes = answer_turns(
                tutor,
                validation,
                adapter=request.adapter,
                program=program.to_teaching(adapter=request.adapter, base_model=base_model),
                retrieval=request.use_retrieval,
                max_tokens=max_tokens,
                threads=threads,
                on_done=on_done,
            )
            score_outcomes(outcomes, request.weights, embed)
            if judge is not None:
                # The run maximises the judge's score: it is the one recorded (the heuristic stays per reply).
                return statistics.fmean(
                    judge.judge(
                        o.turn.query,
                        "\n\n".join(p.text for p in o.passages) or o.turn.context,
                        o.response,
                        o.turn.final_answer,
                    ).score
                    for o in outcomes
                )
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
        baseline = scored(TutorProgram(), example_done("baseline", 0))
        reporter.progress(
            f"baseline score {baseline:.3f}; compiling with {spec.name}",
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
                    f"compiling with {spec.name}: {usage.calls} LM calls",
                    step=done,
                    total_steps=total,
                    metrics={"lm_calls": usage.calls, "lm_tokens": usage.total_tokens},
                )

        metric = judge or PedagogicalMetric(request.weights, embed, with_feedback=spec.feedback_metric)
        reflection_lm = lm
        if spec.uses_reflection_lm:
            reflection_lm = self._configured_lm(
                reflection, reflection_endpoint, self.settings.optimization.reflection_max_tokens, tutor
            )
        student = TutorProgram()
        inputs = CompileInputs(
            budget=request.budget,
            trainset=[turn.example() for turn in train],
            valset=[turn.example() for turn in validation],
            metric=metric,
            seed=request.seed,
            lm=lm,
            reflection_lm=reflection_lm,
        )
        # The budget caps the compilation; the baseline and the final scoring are fixed costs.
        usage.limit(request.budget.max_lm_calls, request.budget.max_lm_tokens)
        try:
            with dspy.context(lm=lm, adapter=adapter, callbacks=[progress, _Calls()]):
                compiled = spec.compile(student, inputs)
        except Exception:
            if not usage.exhausted:
                raise
            # Stopped by the budget mid-search: the best candidate evaluated so far, else the seed program.
            compiled = progress.best_program or student
        finally:
            usage.limit()
        if usage.exhausted:
            reporter.progress(f"{usage.exhausted}: stopping early with the best program found so far")
        # Optimizers swallow failed calls; a cancelled run ends here at the latest.
        reporter.check_cancelled()
        done = len(validation) + 1
        reporter.progress(
            "scoring the optimized program", step=done, total_steps=total, metrics={"trials": progress.trials}
        )
        optimized = scored(compiled, example_done("optimized", len(validation) + 1))
        program = self.programs.save(
            compiled.to_teaching(adapter=request.adapter, base_model=base_model, max_tokens=max_tokens),
            ProgramInfo(
                name=request.name,
                version="",
                optimizer=spec.name,
                metric=request.metric,
                stopped_early=usage.exhausted,
                dataset=info.name,
                dataset_version=info.version,
                adapter=request.adapter,
                base_model=base_model,
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
        return info, self.programs.document(info)

    def promote_program(self, reference: str, force: bool = False) -> Promotion:
        """Serve `reference` for its name if it beats the served version on the benchmark (or `force`)."""
        return promote(self.programs, reference, self._base_model(), force)

    # ----- evaluation

    def evaluate(self, request: EvaluationRequest) -> JobRecord:
        """Validates everything up front (targets, adapters, programs, the turns), then starts the job."""
        if not request.targets:
            raise InvalidArgument(
                "targets is empty: give at least one of 'base', 'adapter:NAME', 'program:NAME[@VERSION][+ADAPTER]'"
            )
        targets = [Target.parse(spec) for spec in request.targets]
        duplicates = sorted({t.spec for t in targets if [u.spec for u in targets].count(t.spec) > 1})
        if duplicates:
            raise InvalidArgument(f"targets must be distinct; repeated: {', '.join(duplicates)}")
        for target in targets:
            if target.kind == "program":
                self.programs.load(target.program)
            if target.adapter:
                self._check_adapter(target.adapter, "adapter")
        if request.max_examples < 0 or request.threads < 0:
            raise InvalidArgument("max_examples and threads must be >= 0")
        max_tokens = self._max_tokens(request.max_tokens)
        if bool(request.dataset) == bool(request.evaluation_set):
            raise InvalidArgument(
                "give exactly one of dataset (its validation split) and evaluation_set "
                f"(a bundled set: {', '.join(EVALUATION_SETS)})"
            )
        if request.evaluation_set:
            source, version = request.evaluation_set, "bundled"
            turns = benchmark_turns(request.evaluation_set, request.max_examples)
        else:
            info = self.datasets.get(validate_name(request.dataset, "dataset name"), request.dataset_version)
            source, version = info.name, info.version
            turns = self._split(info, "validation", request.max_examples)
        if not turns:
            raise FailedPrecondition(
                f"{source}@{version} has no validation examples (a student turn answered by the tutor) to evaluate on: "
                "build the dataset with a validation split (e.g. `--validation-fraction 0.2`)"
            )
        record = self.evaluations.create(
            labels={"dataset": source, "targets": ",".join(t.spec for t in targets)},
            parameters={
                "dataset": source,
                "dataset_version": version,
                "evaluation_set": request.evaluation_set,
                "targets": [t.spec for t in targets],
                "weights": request.weights.to_json(),
                "examples": len(turns),
                "max_tokens": max_tokens,
                "use_retrieval": request.use_retrieval,
                "threads": request.threads or self.settings.optimization.threads,
            },
        )

        def work(reporter: JobReporter) -> str:
            return self._evaluate(reporter, record.id, request, source, version, targets, turns, max_tokens)

        self.evaluations.start(record.id, work)
        return record

    def _resolve(self, target: Target) -> tuple[str, str]:
        """The LoRA adapter and program reference a target answers with."""
        if target.kind == "program":
            info, _ = self.programs.load(target.program)
            return (info.adapter if target.adapter is None else target.adapter), info.ref
        return target.adapter or "", ""

    def _evaluate(
        self,
        reporter: JobReporter,
        evaluation_id: str,
        request: EvaluationRequest,
        source: str,
        version: str,
        targets: list[Target],
        turns: list[TutorTurn],
        max_tokens: int,
    ) -> str:
        embed = self._embed()
        threads = request.threads or self.settings.optimization.threads
        tutor = self._tutor(LmUsage(), reporter)
        total = len(targets) * len(turns)
        done = 0
        done_lock = threading.Lock()
        results: list[TargetMetrics] = []
        details: dict[str, list[dict[str, Any]]] = {}
        for target in targets:
            adapter, program = self._resolve(target)

            def turn_done(_outcome: Outcome, spec: str = target.spec) -> None:
                nonlocal done
                with done_lock:
                    done += 1
                    step = done
                reporter.progress(f"{spec}: {step}/{total} replies", step=step, total_steps=total)

            outcomes = answer_turns(
                tutor,
                turns,
                adapter=adapter,
                program=program,
                retrieval=request.use_retrieval,
                max_tokens=max_tokens,
                threads=threads,
                on_done=turn_done,
            )
            score_outcomes(outcomes, request.weights, embed)
            metrics = TargetMetrics.of(target.spec, outcomes)
            results.append(metrics)
            details[target.spec] = [outcome.to_json() for outcome in outcomes]
            reporter.progress(
                f"{target.spec}: score {metrics.pedagogical_score}",
                step=done,
                total_steps=total,
                metrics={f"score[{target.spec}]": metrics.pedagogical_score.mean},
            )
            if request.evaluation_set:
                self._record_benchmark(target, adapter, program, metrics, evaluation_id)
        report = save_report(
            self.store,
            EvaluationReport(
                evaluation_id=evaluation_id,
                dataset=source,
                dataset_version=version,
                weights=request.weights.to_json(),
                targets=results,
                examples=details,
            ),
        )
        return report.evaluation_id

    def _record_benchmark(
        self, target: Target, adapter: str, program: str, metrics: TargetMetrics, evaluation_id: str
    ) -> None:
        """Benchmark results join the lineage of what was measured: the program version (promotion compares
        these), or the adapter version when the target is an adapter alone."""
        summary = {**metrics.summary(), "evaluation_id": evaluation_id, "target": target.spec}
        if program:
            info, _ = self.programs.load(program)
            if adapter == info.adapter:
                info.benchmark = summary
                self.programs.update_info(info)
        elif adapter:
            # The version inference serves for a bare adapter name: the latest registered one.
            self.adapters.record_benchmark(adapter, self.adapters.get(adapter).version, summary)

    def evaluation_report(self, evaluation_id: str) -> EvaluationReport:
        return load_report(self.store, evaluation_id)
