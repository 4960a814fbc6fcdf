"""Optimization runs and evaluations as durable jobs: validation of requests (synchronous, so bad input
fails the call), the work each job does (a run's steps are `compilation.py`'s), and reading back programs
and reports."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dspy

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.programs import MAX_PENALTY, ProgramInfo, ProgramRepository, penalty_in_range
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.client.connection import Connection
from tutorforge.client.inference import InferenceClient
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, TutorforgeError, error_for_status
from tutorforge.core.jobs import JobDirectory, JobManager, JobRecord, JobReporter
from tutorforge.core.names import BASE, NAME_PATTERN, validate_name
from tutorforge.core.paging import MAX_PAGE_SIZE, keyset_page
from tutorforge.core.settings import LmEndpoint, Settings
from tutorforge.core.telemetry.experiments import tracked_job
from tutorforge.optimization.compilation import CostReporter, Optimization
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
from tutorforge.optimization.lm import LmUsage, TutorClient
from tutorforge.optimization.metrics import Embed, MetricWeights
from tutorforge.optimization.optimizers import (
    DEFAULT_OPTIMIZER,
    Budget,
    OptimizerSpec,
    optimizer_spec,
    parameters,
)
from tutorforge.optimization.program import TutorProgram
from tutorforge.optimization.promotion import Promotion, promote
from tutorforge.optimization.report import EvaluationReport, load_report, save_report
from tutorforge.optimization.turns import EVALUATION_SETS, TutorTurn, benchmark_turns, turns_from_records

DEFAULT_MAX_TOKENS = 128
# Frequency penalties one run may try (each costs a scoring of the validation turns).
MAX_FREQUENCY_PENALTIES = 4
_RESTART_HINT = "start it again (the program or report was not saved)"


def _check_penalties(penalties: tuple[float, ...]) -> None:
    if len(penalties) > MAX_FREQUENCY_PENALTIES:
        raise InvalidArgument(
            f"frequency_penalties has {len(penalties)} values; at most {MAX_FREQUENCY_PENALTIES} (each costs a validation scoring)"
        )
    for penalty in penalties:
        if not penalty_in_range(penalty):
            raise InvalidArgument(f"frequency_penalties: {penalty} is out of range: use -{MAX_PENALTY:g}..{MAX_PENALTY:g}")


def _program_name(info: ProgramInfo) -> str:
    return info.name


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
    # Frequency penalties to try with the unoptimized program before compiling (one validation scoring
    # each); the best is compiled with and saved in the program. Empty = none.
    frequency_penalties: tuple[float, ...] = ()


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


class OptimizationRuns:
    """The optimization service's domain: runs, programs, evaluations."""

    def __init__(self, store: ArtifactStore, settings: Settings, connection: Callable[[str], Connection]):
        self.store = store
        self.settings = settings
        # connection("inference"): the inference service, as Runtime.connection gives it (opened on first use).
        self._connection = connection
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

    @cached_property
    def _inference(self) -> InferenceClient:
        return InferenceClient(self._connection("inference"))

    def _tutor(self, usage: LmUsage, reporter: JobReporter) -> TutorClient:
        def before_call() -> None:
            reporter.check_cancelled()
            usage.check()

        return TutorClient(self._inference, usage=usage, before_call=before_call)

    def _base_model(self) -> str:
        """The inference service's base model (programs record it; chat refuses a program for another)."""
        try:
            return self._inference.adapters().base_model
        except TutorforgeError as error:
            context = "the inference service is needed to compile and evaluate programs"
            raise error_for_status(error.code, f"{context}: {error.message}") from error

    def recover_interrupted(self) -> None:
        self.runs.recover_interrupted(_RESTART_HINT)
        self.evaluations.recover_interrupted(_RESTART_HINT)

    # ----- optimization

    def start_optimization(self, request: OptimizationRequest) -> JobRecord:
        validate_name(request.name, "program name")
        # Fields of the request first, then what they refer to (the dataset, the adapter).
        max_tokens = self._max_tokens(request.max_tokens)
        _check_penalties(request.frequency_penalties)
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
                "frequency_penalties": list(request.frequency_penalties),
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
        tutor = tutor or TutorClient(self._inference)
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
        """A run's job: score the unoptimized program, compile, score the result, save it as a version."""
        usage = LmUsage()
        reporter = CostReporter(reporter, usage)
        tutor = self._tutor(usage, reporter)
        base_model = self._base_model()
        embed = self._embed() if request.weights.similarity > 0 else None
        judge = None
        if request.metric == "judge":
            judge = JudgeMetric(self._judge_lm(tutor), with_feedback=spec.feedback_metric)
        run = Optimization(
            reporter, tutor, request, validation, spec,
            max_tokens=max_tokens, base_model=base_model, embed=embed, judge=judge,
        )
        baseline = run.score_baseline()
        reflection_lm = None
        if spec.uses_reflection_lm:
            reflection_lm = self._configured_lm(
                reflection, reflection_endpoint, self.settings.optimization.reflection_max_tokens, tutor
            )
        # Demonstrations must beat the unoptimized program at the chosen decoding.
        bar = run.choose_decoding(baseline)
        compiled = run.compile(train, make_format(lm_format), reflection_lm, bar)
        optimized = run.score_optimized(compiled)
        if optimized < bar:
            # Serving it would be a regression (BootstrapFewShot, unlike random search, has no uncompiled
            # candidate to fall back on): the run saves the unoptimized program at the chosen decoding.
            run.reporter.progress(
                f"the compiled program scored {optimized:.3f}, below the unoptimized program's {bar:.3f}: "
                "saving the unoptimized program",
                metrics={"compiled_score": optimized},
            )
            compiled, optimized = TutorProgram(), bar
        return self._save_program(run, run_id, info, compiled, baseline, optimized)

    def _save_program(
        self,
        run: Optimization,
        run_id: str,
        info: DatasetInfo,
        compiled: TutorProgram,
        baseline: float,
        optimized: float,
    ) -> str:
        request, usage = run.request, run.usage
        program = self.programs.save(
            run.teaching(compiled),
            ProgramInfo(
                name=request.name,
                version="",
                optimizer=run.spec.name,
                metric=request.metric,
                stopped_early=usage.exhausted,
                dataset=info.name,
                dataset_version=info.version,
                adapter=request.adapter,
                base_model=run.base_model,
                baseline_score=baseline,
                optimized_score=optimized,
                lm_calls=usage.calls,
                lm_tokens=usage.total_tokens,
                parameters=self.runs.get(run_id).parameters,
                run_id=run_id,
            ),
        )
        run.reporter.progress(
            f"saved {program.name}@{program.version}: validation score {baseline:.3f} → {optimized:.3f}",
            step=run.total,
            total_steps=run.total,
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

    def list_programs(self, page_size: int = MAX_PAGE_SIZE, page_token: str = "") -> tuple[list[ProgramInfo], str]:
        """The served version of each program by name, after the name `page_token` gives; the next token."""
        return keyset_page(self.programs.list(), _program_name, page_size, page_token, token_pattern=NAME_PATTERN)

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
