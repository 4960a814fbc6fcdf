"""Demo stage: optimize the teaching program over the trained adapter on the demo dataset with a small
budget, then evaluate the base model, the adapter and adapter + program side by side through the tutor
chat (retrieval on) on the validation split, every figure with its 95% interval, and show the report."""

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
TRAIN_EXAMPLES = 12
# Validation turns the program is compiled against; the report uses more.
OPTIMIZATION_VALIDATION = 6
REPORT_EXAMPLES = 24


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
            adapter=adapter,
            optimizer=pb.OPTIMIZER_LABELED_FEW_SHOT,
            budget=pb.OptimizerBudget(
                max_labeled_demos=2,
                threads=8,
                max_train_examples=TRAIN_EXAMPLES,
                max_validation_examples=OPTIMIZATION_VALIDATION,
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

    # The program runs on the adapter it was compiled against: "program:NAME" is adapter + program.
    targets = ["base", *([f"adapter:{adapter}"] if adapter else []), f"program:{name}"]
    evaluation = stub.Evaluate(
        pb.EvaluateRequest(
            dataset=dataset,
            targets=[pb.EvaluationTarget(spec=spec) for spec in targets],
            max_examples=REPORT_EXAMPLES,
            max_tokens=MAX_TOKENS,
            threads=8,
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
    base, *others = response.report.targets
    for target in others:
        low, high = target.intervals["pedagogical_score"].low, base.intervals["pedagogical_score"].high
        context.console.print(
            f"{target.target}: pedagogical score {target.pedagogical_score / base.pedagogical_score:.2f}× base "
            f"({'intervals do not overlap' if low > high else 'intervals overlap'})"
        )
    context.console.print(
        f"report: {folder / 'report.md'}; charts: {', '.join(str(folder / f.path) for f in response.files if f.path.endswith('.png'))}"
    )
    context.results["evaluation"] = evaluation_id
