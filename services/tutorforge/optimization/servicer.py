"""gRPC OptimizationService: translates proto ⇄ domain (`OptimizationRuns`); errors become statuses in
the interceptor."""

from __future__ import annotations

import json

import grpc

from tutorforge.artifacts.programs import ProgramInfo
from tutorforge.artifacts.reports import report_files
from tutorforge.core.convert import job_to_proto
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.job_api import JobServicer
from tutorforge.core.runtime import Runtime
from tutorforge.optimization.evaluation import ESTIMATES, TargetMetrics
from tutorforge.optimization.formats import LmFormatKind
from tutorforge.optimization.metrics import MetricWeights
from tutorforge.optimization.optimizers import DEFAULT_OPTIMIZER, REGISTRY, Budget, OptimizerSpec
from tutorforge.optimization.report import EvaluationReport
from tutorforge.optimization.runs import EvaluationRequest, OptimizationRequest, OptimizationRuns
from tutorforge.v1 import optimization_pb2 as pb
from tutorforge.v1 import optimization_pb2_grpc

SERVICE_NAME = "tutorforge.v1.OptimizationService"



def optimizer_mapping(registry: dict[str, OptimizerSpec] = REGISTRY) -> dict[int, str]:
    """Proto enum value → registry name, read from the registry's entries."""
    return {pb.Optimizer.Value(spec.proto): name for name, spec in registry.items()}


OPTIMIZERS = optimizer_mapping()
METRICS = {pb.METRIC_PEDAGOGICAL: "pedagogical", pb.METRIC_JUDGE: "judge"}
LM_FORMATS = {
    pb.LM_FORMAT_PLAIN: LmFormatKind.PLAIN,
    pb.LM_FORMAT_CHAT: LmFormatKind.CHAT,
    pb.LM_FORMAT_JSON: LmFormatKind.JSON,
}


def _enum(mapping: dict, value: int, field: str, unspecified: object = None) -> object:
    if value == 0:
        return unspecified
    if value not in mapping:
        raise InvalidArgument(f"{field} {value} is not a known value; see optimization.proto")
    return mapping[value]


def weights_from_proto(message: pb.MetricWeights) -> MetricWeights:
    return MetricWeights.from_overrides(
        **{
            name: getattr(message, name) if message.HasField(name) else None
            for name in MetricWeights.__dataclass_fields__
        }
    )


def budget_from_proto(message: pb.OptimizerBudget) -> Budget:
    return Budget(
        trials=message.trials,
        candidates=message.candidates,
        threads=message.threads,
        max_bootstrapped_demos=message.max_bootstrapped_demos,
        max_labeled_demos=message.max_labeled_demos,
        max_train_examples=message.max_train_examples,
        max_validation_examples=message.max_validation_examples,
        max_lm_calls=message.max_lm_calls,
        max_lm_tokens=message.max_lm_tokens,
    )


def program_info_to_proto(info: ProgramInfo) -> pb.ProgramInfo:
    return pb.ProgramInfo(
        name=info.name,
        version=info.version,
        optimizer=info.optimizer,
        dataset=info.dataset,
        dataset_version=info.dataset_version,
        adapter=info.adapter,
        baseline_score=info.baseline_score,
        optimized_score=info.optimized_score,
        lm_calls=info.lm_calls,
        lm_tokens=info.lm_tokens,
        created_at_unix=int(info.created_at),
        parameters_json=json.dumps(info.parameters, sort_keys=True),
        run_id=info.run_id,
        base_model=info.base_model,
        benchmark_json=json.dumps(info.benchmark, sort_keys=True) if info.benchmark else "",
        metric=info.metric,
        stopped_early=info.stopped_early,
    )


def metrics_to_proto(metrics: TargetMetrics) -> pb.TargetMetrics:
    return pb.TargetMetrics(
        target=metrics.target,
        examples=metrics.examples,
        errors=metrics.errors,
        pedagogical_score=metrics.pedagogical_score.mean,
        context_usage=metrics.context_usage.mean,
        pedagogical_elements=metrics.pedagogical_elements.mean,
        length_ratio=metrics.length_ratio.mean,
        socratic=metrics.socratic.mean,
        question_rate=metrics.question_rate.mean,
        answer_reveal_rate=metrics.answer_reveal_rate.mean,
        citation_rate=metrics.citation_rate.mean,
        groundedness=metrics.groundedness.mean,
        mean_words=metrics.mean_words.mean,
        similarity_mean=metrics.similarity.mean,
        mean_latency_seconds=metrics.mean_latency_seconds,
        score_per_subject=metrics.score_per_subject,
        score_per_kind=metrics.score_per_kind,
        intervals={
            name: pb.Interval(low=getattr(metrics, name).low, high=getattr(metrics, name).high) for name in ESTIMATES
        },
    )


def report_to_proto(report: EvaluationReport) -> pb.EvaluationReport:
    return pb.EvaluationReport(
        evaluation_id=report.evaluation_id,
        dataset=report.dataset,
        dataset_version=report.dataset_version,
        targets=[metrics_to_proto(target) for target in report.targets],
        report_json_path=report.files.get("json", ""),
        report_markdown_path=report.files.get("markdown", ""),
        chart_paths=report.files.get("charts", []),
    )


class OptimizationServicer(JobServicer, optimization_pb2_grpc.OptimizationServiceServicer):
    def __init__(self, runs: OptimizationRuns):
        self.runs = runs
        self.job_directory = runs.job_directory

    def StartOptimization(
        self, request: pb.StartOptimizationRequest, context: grpc.ServicerContext
    ) -> pb.StartOptimizationResponse:
        record = self.runs.start_optimization(
            OptimizationRequest(
                name=request.name,
                dataset=request.dataset,
                dataset_version=request.dataset_version,
                optimizer=_enum(OPTIMIZERS, request.optimizer, "optimizer", DEFAULT_OPTIMIZER),
                metric=_enum(METRICS, request.metric, "metric", "pedagogical"),
                adapter=request.adapter,
                budget=budget_from_proto(request.budget),
                seed=request.seed,
                weights=weights_from_proto(request.weights),
                lm_format=_enum(LM_FORMATS, request.lm_format, "lm_format"),
                reflection_adapter=request.reflection_adapter,
                max_tokens=request.max_tokens,
                use_retrieval=request.use_retrieval if request.HasField("use_retrieval") else True,
                frequency_penalties=tuple(request.frequency_penalties),
            )
        )
        return pb.StartOptimizationResponse(job=job_to_proto(record))

    def ListPrograms(
        self, request: pb.ListProgramsRequest, context: grpc.ServicerContext
    ) -> pb.ListProgramsResponse:
        programs, token = self.runs.list_programs(request.page_size, request.page_token)
        return pb.ListProgramsResponse(programs=[program_info_to_proto(info) for info in programs], next_page_token=token)

    def GetProgram(
        self, request: pb.GetProgramRequest, context: grpc.ServicerContext
    ) -> pb.GetProgramResponse:
        info, state = self.runs.get_program(request.name, request.version)
        return pb.GetProgramResponse(
            program=program_info_to_proto(info), state_json=json.dumps(state, indent=2, ensure_ascii=False)
        )

    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.EvaluateResponse:
        record = self.runs.evaluate(
            EvaluationRequest(
                dataset=request.dataset,
                dataset_version=request.dataset_version,
                targets=[target.spec for target in request.targets],
                weights=weights_from_proto(request.weights),
                evaluation_set=request.evaluation_set,
                max_examples=request.max_examples,
                threads=request.threads,
                max_tokens=request.max_tokens,
                use_retrieval=request.use_retrieval if request.HasField("use_retrieval") else True,
            )
        )
        return pb.EvaluateResponse(job=job_to_proto(record))

    def GetEvaluation(
        self, request: pb.GetEvaluationRequest, context: grpc.ServicerContext
    ) -> pb.GetEvaluationResponse:
        report = self.runs.evaluation_report(request.evaluation_id)
        files = []
        if request.include_files:
            files = [
                pb.ReportFile(path=path, content=data)
                for path, data in report_files(self.runs.store, report.evaluation_id, report.files).items()
            ]
        return pb.GetEvaluationResponse(report=report_to_proto(report), files=files)


    def PromoteProgram(
        self, request: pb.PromoteProgramRequest, context: grpc.ServicerContext
    ) -> pb.PromoteProgramResponse:
        promotion = self.runs.promote_program(request.program, request.force)
        return pb.PromoteProgramResponse(
            program=program_info_to_proto(promotion.program),
            previous_version=promotion.previous_version,
            reason=promotion.reason,
        )


def register(server: grpc.Server, runtime: Runtime) -> str:
    runs = OptimizationRuns(runtime.store, runtime.settings, runtime.connection)
    runs.recover_interrupted()
    runtime.on_shutdown(runs.runs.stop)
    runtime.on_shutdown(runs.evaluations.stop)
    optimization_pb2_grpc.add_OptimizationServiceServicer_to_server(OptimizationServicer(runs), server)
    return SERVICE_NAME
