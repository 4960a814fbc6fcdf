"""Demo stage: optimize the teaching program on the demo dataset with a tiny budget, then evaluate the base
model, the trained adapter and the optimized program side by side, and show the report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tutorforge.core.cli_support import follow_job
from tutorforge.optimization.cli import comparison_table
from tutorforge.v1 import common_pb2, optimization_pb2_grpc
from tutorforge.v1 import optimization_pb2 as pb

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Optimization: DSPy program and the pedagogical report"
PROGRAM = "demo-tutor"
# Small on purpose: the whole demo has 10 minutes on 2 cores.
MAX_TOKENS = 64
TRAIN_EXAMPLES = 6
VALIDATION_EXAMPLES = 3


def _follow(
    context: DemoContext, stub: optimization_pb2_grpc.OptimizationServiceStub, run_id: str, what: str
) -> common_pb2.Job:
    events = stub.WatchRun(pb.WatchRunRequest(run_id=run_id))
    follow_job((response.event for response in events), label=what, metric="best_score", out=context.console)
    run = stub.GetRun(pb.GetRunRequest(run_id=run_id)).run
    if run.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"{what} ended {common_pb2.JobState.Name(run.state)}: {run.error or run.message}")
    return run


def run(context: DemoContext) -> None:
    dataset = context.results["dataset"]
    adapter = context.results.get("adapter", "")
    stub = optimization_pb2_grpc.OptimizationServiceStub(context.channel)

    start = stub.StartOptimization(
        pb.StartOptimizationRequest(
            name=PROGRAM,
            dataset=dataset,
            optimizer=pb.OPTIMIZER_LABELED_FEW_SHOT,
            budget=pb.OptimizerBudget(
                max_labeled_demos=2,
                threads=4,
                max_train_examples=TRAIN_EXAMPLES,
                max_validation_examples=VALIDATION_EXAMPLES,
            ),
            max_tokens=MAX_TOKENS,
        )
    )
    result = _follow(context, stub, start.run.id, "optimize").result
    name, _, version = result.partition("@")
    program = stub.GetProgram(pb.GetProgramRequest(name=name, version=version)).program
    context.console.print(
        f"program [bold]{result}[/] ({program.optimizer}): validation score {program.baseline_score:.3f} → "
        f"[bold]{program.optimized_score:.3f}[/], {program.lm_calls} LM calls, {program.lm_tokens} tokens"
    )
    context.results["program"] = name

    targets = ["base", *([f"adapter:{adapter}"] if adapter else []), f"program:{name}"]
    evaluation = stub.Evaluate(
        pb.EvaluateRequest(
            dataset=dataset,
            targets=[pb.EvaluationTarget(spec=spec) for spec in targets],
            max_examples=VALIDATION_EXAMPLES,
            max_tokens=MAX_TOKENS,
        )
    )
    evaluation_id = _follow(context, stub, evaluation.run.id, "evaluate").result
    response = stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=evaluation_id, include_files=True))
    folder = context.workdir / "report"
    for file in response.files:
        path = folder / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.content)
    context.console.print(comparison_table(response.report))
    context.console.print(
        f"report: {folder / 'report.md'}; charts: {', '.join(str(folder / f.path) for f in response.files if f.path.endswith('.png'))}"
    )
    context.results["evaluation"] = evaluation_id
