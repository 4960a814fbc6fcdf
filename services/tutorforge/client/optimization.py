"""OptimizationClient: compile teaching programs, evaluate targets, promote programs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tutorforge.client.connection import Connection
from tutorforge.client.convert import enum_value, message
from tutorforge.client.jobs import JobClient, JobHandle
from tutorforge.v1 import optimization_pb2 as pb
from tutorforge.v1 import optimization_pb2_grpc


class OptimizationClient(JobClient):
    def __init__(self, connection: Connection):
        super().__init__(connection, optimization_pb2_grpc.OptimizationServiceStub(connection.channel))

    def optimize(
        self,
        name: str,
        dataset: str,
        *,
        optimizer: str | int = "labeled_few_shot",
        adapter: str = "",
        budget: pb.OptimizerBudget | Mapping[str, Any] | None = None,
        metric: str | int = 0,
        max_tokens: int = 0,
        use_retrieval: bool | None = None,
        **fields: Any,
    ) -> JobHandle:
        """Start compiling program `name` on `dataset` (over `adapter`, "" = base). `optimizer`: labeled_few_shot,
        bootstrap_few_shot, bootstrap_few_shot_with_random_search, copro, mipro_v2, gepa, simba; `metric`:
        pedagogical or judge (0 = the server's default, pedagogical). The run's `result` is NAME@VERSION."""
        # Other StartOptimizationRequest fields (seed, weights, reflection_adapter, ...) pass as keywords.
        request = message(pb.StartOptimizationRequest, {
            "name": name,
            "dataset": dataset,
            "adapter": adapter,
            "optimizer": enum_value(pb.Optimizer, "OPTIMIZER_", optimizer, "optimizer"),
            "budget": message(pb.OptimizerBudget, budget, "budget"),
            "metric": enum_value(pb.Metric, "METRIC_", metric, "metric"),
            "max_tokens": max_tokens,
            **fields,
        }, "optimize")
        if use_retrieval is not None:
            request.use_retrieval = use_retrieval
        return self.start(request)

    def start(self, request: pb.StartOptimizationRequest) -> JobHandle:
        """Start compiling from a whole request (what `optimize` builds)."""
        return self.job(self.connection.unary(self.stub.StartOptimization, request, "start").job)

    def evaluate(
        self,
        targets: Iterable[str],
        *,
        dataset: str = "",
        dataset_version: str = "",
        evaluation_set: str = "",
        max_examples: int = 0,
        max_tokens: int = 0,
        threads: int = 0,
        use_retrieval: bool | None = None,
        weights: pb.MetricWeights | Mapping[str, float] | None = None,
    ) -> JobHandle:
        """Start evaluating targets ("base", "adapter:NAME", "program:NAME[@ADAPTER]") on a dataset's
        validation split or a bundled set ("tutor-benchmark"). The run's `result` is the evaluation id."""
        request = pb.EvaluateRequest(
            dataset=dataset, dataset_version=dataset_version, evaluation_set=evaluation_set,
            targets=[pb.EvaluationTarget(spec=spec) for spec in targets],
            max_examples=max_examples, max_tokens=max_tokens, threads=threads,
            weights=message(pb.MetricWeights, weights, "weights"),
        )
        if use_retrieval is not None:
            request.use_retrieval = use_retrieval
        return self.job(self.connection.unary(self.stub.Evaluate, request, "start").job)

    def get_evaluation(self, evaluation_id: str, include_files: bool = False) -> pb.GetEvaluationResponse:
        request = pb.GetEvaluationRequest(evaluation_id=evaluation_id, include_files=include_files)
        return self.connection.unary(self.stub.GetEvaluation, request, "read")

    def programs(self, page_size: int = 100) -> list[pb.ProgramInfo]:
        """The served version of every program, by name."""
        pages = self.connection.pages(self.stub.ListPrograms, lambda token: pb.ListProgramsRequest(page_size=page_size, page_token=token))
        return [program for page in pages for program in page.programs]

    def get_program(self, name: str, version: str = "") -> pb.GetProgramResponse:
        return self.connection.unary(self.stub.GetProgram, pb.GetProgramRequest(name=name, version=version), "read")

    def promote(self, program: str, force: bool = False) -> pb.PromoteProgramResponse:
        """Serve NAME[@VERSION] under its bare name if it beats the served version on the benchmark (or `force`)."""
        return self.connection.unary(self.stub.PromoteProgram, pb.PromoteProgramRequest(program=program, force=force), "write")
