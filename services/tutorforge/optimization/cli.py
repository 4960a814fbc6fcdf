"""`tutorforge optimize`, `tutorforge evaluate` and `tutorforge programs …` against a running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tutorforge.client import OptimizationClient
from tutorforge.core.cli_support import (
    DEFAULT_ADDRESS,
    AddressOption,
    JsonOption,
    comparison_table,
    connect,
    console,
    err_console,
    follow_and_get,
    job_state_label,
    print_json,
    rpc_errors,
    to_dict,
)
from tutorforge.core.names import model_label
from tutorforge.optimization.optimizers import DEFAULT_OPTIMIZER, REGISTRY
from tutorforge.v1 import common_pb2
from tutorforge.v1 import optimization_pb2 as pb

# Read from the optimizer registry: a new entry is a new --optimizer choice.
OPTIMIZER_CHOICES = {name: pb.Optimizer.Value(spec.proto) for name, spec in REGISTRY.items()}
METRIC_CHOICES = {"pedagogical": pb.METRIC_PEDAGOGICAL, "judge": pb.METRIC_JUDGE}
LM_FORMAT_CHOICES = {
    "auto": pb.LM_FORMAT_UNSPECIFIED,
    "plain": pb.LM_FORMAT_PLAIN,
    "chat": pb.LM_FORMAT_CHAT,
    "json": pb.LM_FORMAT_JSON,
}
_WEIGHT_FIELDS = ("context_usage", "pedagogical_elements", "length_ratio", "socratic", "similarity")

programs_app = typer.Typer(name="programs", help="Optimized DSPy teaching programs.", no_args_is_help=True)


def _client(address: str) -> OptimizationClient:
    return connect(address).optimization


def _choice(value: str, choices: dict[str, int], option: str) -> int:
    if value not in choices:
        raise typer.BadParameter(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return choices[value]


def _weights(expressions: list[str]) -> pb.MetricWeights:
    """`name=value` pairs, e.g. socratic=0.2."""
    weights = pb.MetricWeights()
    for expression in expressions:
        name, sep, value = expression.partition("=")
        if not sep or name.strip() not in _WEIGHT_FIELDS:
            raise typer.BadParameter(
                f"--weight {expression!r} must be NAME=VALUE with NAME one of {', '.join(_WEIGHT_FIELDS)}"
            )
        try:
            setattr(weights, name.strip(), float(value))
        except ValueError as error:
            raise typer.BadParameter(f"--weight {expression!r}: {value!r} is not a number") from error
    return weights


def _finished(job: common_pb2.Job, what: str, json_output: bool) -> None:
    if job.state == common_pb2.JOB_STATE_SUCCEEDED:
        return
    if json_output:
        print_json({"run": to_dict(job)})
    err_console.print(f"[bold red]{what} {job_state_label(job.state)}[/] {job.error or job.message}")
    raise typer.Exit(code=1)


def _print_program(info: pb.ProgramInfo) -> None:
    console.print(
        f"[bold]{info.name}[/]@{info.version}: {info.optimizer} over {info.adapter or 'the base model'} "
        f"(for {info.base_model or 'any base model'}), dataset "
        f"{info.dataset}@{info.dataset_version}"
    )
    console.print(
        f"validation {info.metric or 'pedagogical'} score {info.baseline_score:.3f} → "
        f"[bold]{info.optimized_score:.3f}[/]; cost {info.lm_calls} LM calls, {info.lm_tokens} tokens; "
        f"run {info.run_id}"
    )
    if info.stopped_early:
        console.print(f"[yellow]stopped early[/]: {info.stopped_early}; saved the best program found by then")


def optimize(
    dataset: Annotated[
        str, typer.Argument(help="Dataset whose train/validation splits the program learns from.")
    ],
    name: Annotated[
        str, typer.Option("--name", help="Program name: lowercase letters, digits, '.', '_', '-'.")
    ],
    optimizer: Annotated[
        str, typer.Option(help=f"One of {', '.join(OPTIMIZER_CHOICES)}.")
    ] = DEFAULT_OPTIMIZER,
    metric: Annotated[
        str, typer.Option(help="What to maximise: pedagogical (heuristic score) or judge (LLM-judge rubric).")
    ] = "pedagogical",
    adapter: Annotated[
        str, typer.Option(help="LoRA adapter the program runs over (default: the base model).")
    ] = "",
    lm_format: Annotated[
        str, typer.Option("--lm-format", help="How prompts are formatted: auto, plain, chat or json.")
    ] = "auto",
    trials: Annotated[
        int, typer.Option(help="Rounds / trials / depth, by optimizer (0 = its small default).")
    ] = 0,
    candidates: Annotated[int, typer.Option(help="Instruction or program candidates (0 = default).")] = 0,
    threads: Annotated[int, typer.Option(help="Parallel LM calls.")] = 4,
    demos: Annotated[int, typer.Option(help="Labeled demos in the prompt (0 = 3).")] = 0,
    bootstrapped_demos: Annotated[int, typer.Option(help="Bootstrapped demos (0 = 2).")] = 0,
    max_train: Annotated[int, typer.Option("--max-train", help="Cap on training examples (0 = all).")] = 0,
    max_val: Annotated[int, typer.Option("--max-val", help="Cap on validation examples (0 = all).")] = 0,
    max_tokens: Annotated[int, typer.Option(help="Tokens per reply (0 = 128).")] = 0,
    frequency_penalty: Annotated[
        list[float] | None,
        typer.Option(
            "--frequency-penalty",
            help="A frequency penalty to try before compiling (repeatable); the best one is kept in the program.",
        ),
    ] = None,
    max_lm_calls: Annotated[
        int, typer.Option(help="LM calls the compilation may make; reaching it stops early (0 = no cap).")
    ] = 0,
    max_lm_tokens: Annotated[
        int, typer.Option(help="LM tokens the compilation may spend; reaching it stops early (0 = no cap).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the example order and the optimizers.")] = 0,
    retrieval: Annotated[
        bool, typer.Option(help="Ground teaching turns on retrieved passages, as chat does.")
    ] = True,
    weight: Annotated[
        list[str] | None, typer.Option("--weight", help="Metric weight NAME=VALUE (repeatable).")
    ] = None,
    reflection_adapter: Annotated[
        str,
        typer.Option(help="Reflection LM (mipro, copro, gepa, simba): 'base' or an adapter (default: settings)"),
    ] = "",
    dataset_version: Annotated[
        str, typer.Option("--dataset-version", help="Dataset version (default: newest).")
    ] = "",
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Compile the teaching program with a DSPy optimizer and save it as a versioned program."""
    request = pb.StartOptimizationRequest(
        name=name,
        dataset=dataset,
        dataset_version=dataset_version,
        optimizer=_choice(optimizer, OPTIMIZER_CHOICES, "--optimizer"),
        adapter=adapter,
        lm_format=_choice(lm_format, LM_FORMAT_CHOICES, "--lm-format"),
        budget=pb.OptimizerBudget(
            trials=trials,
            candidates=candidates,
            threads=threads,
            max_labeled_demos=demos,
            max_bootstrapped_demos=bootstrapped_demos,
            max_train_examples=max_train,
            max_validation_examples=max_val,
            max_lm_calls=max_lm_calls,
            max_lm_tokens=max_lm_tokens,
        ),
        metric=_choice(metric, METRIC_CHOICES, "--metric"),
        seed=seed,
        weights=_weights(weight or []),
        use_retrieval=retrieval,
        reflection_adapter=reflection_adapter,
        max_tokens=max_tokens,
        frequency_penalties=frequency_penalty or [],
    )
    client = _client(address)
    with rpc_errors():
        run = follow_and_get(client.start(request), metric="best_score")
        _finished(run, "optimization", json_output)
        program_name, _, version = run.result.partition("@")
        program = client.get_program(program_name, version).program
    if json_output:
        print_json({"run": to_dict(run), "program": to_dict(program)})
    else:
        _print_program(program)


def evaluate(
    target: Annotated[
        list[str],
        typer.Option("--target", help="base, adapter:NAME or program:NAME[@VERSION][+ADAPTER] (repeatable)."),
    ],
    dataset: Annotated[
        str, typer.Argument(help="Dataset whose validation split is evaluated (or give --set).")
    ] = "",
    evaluation_set: Annotated[
        str, typer.Option("--set", help="A bundled evaluation set instead of a dataset: tutor-benchmark.")
    ] = "",
    retrieval: Annotated[bool, typer.Option(help="Answer with retrieval and citations, as chat does.")] = True,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Copy the report (JSON, Markdown, charts) here.")
    ] = None,
    max_examples: Annotated[int, typer.Option(help="Cap on examples (0 = the whole validation split).")] = 0,
    threads: Annotated[int, typer.Option(help="Parallel LM calls (0 = server default).")] = 0,
    max_tokens: Annotated[int, typer.Option(help="Tokens per reply (0 = 128).")] = 0,
    weight: Annotated[
        list[str] | None, typer.Option("--weight", help="Metric weight NAME=VALUE (repeatable).")
    ] = None,
    dataset_version: Annotated[
        str, typer.Option("--dataset-version", help="Dataset version (default: newest).")
    ] = "",
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Evaluate targets side by side with the pedagogical metrics; prints a comparison table."""
    client = _client(address)
    with rpc_errors():
        started = client.evaluate(
            target,
            dataset=dataset,
            dataset_version=dataset_version,
            evaluation_set=evaluation_set,
            weights=_weights(weight or []),
            max_examples=max_examples,
            threads=threads,
            max_tokens=max_tokens,
            use_retrieval=retrieval,
        )
        run = follow_and_get(started, metric="best_score")
        _finished(run, "evaluation", json_output)
        response = client.get_evaluation(run.result, include_files=report_dir is not None)
    saved = []
    if report_dir is not None:
        for file in response.files:
            path = report_dir / file.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(file.content)
            saved.append(str(path))
    if json_output:
        print_json({"run": to_dict(run), "report": to_dict(response.report), "saved_files": saved})
        return
    console.print(comparison_table(response.report))
    if saved:
        console.print(f"report saved in {report_dir}: " + ", ".join(Path(p).name for p in saved))
    else:
        console.print(f"report in the server's store: {response.report.report_markdown_path}")


@programs_app.command("list")
def list_programs(address: AddressOption = DEFAULT_ADDRESS, json_output: JsonOption = False) -> None:
    """Saved programs (latest version of each)."""
    with rpc_errors():
        programs = _client(address).programs()
    if json_output:
        print_json({"programs": [to_dict(p) for p in programs]})
        return
    table = Table(
        "name", "version", "optimizer", "adapter", "dataset", "baseline", "optimized", "LM calls", "tokens"
    )
    for p in programs:
        table.add_row(
            p.name,
            p.version,
            p.optimizer,
            model_label(p.adapter),
            f"{p.dataset}@{p.dataset_version}",
            f"{p.baseline_score:.3f}",
            f"{p.optimized_score:.3f}",
            str(p.lm_calls),
            str(p.lm_tokens),
        )
    console.print(table)


@programs_app.command("show")
def show_program(
    name: Annotated[str, typer.Argument(help="Program name.")],
    version: Annotated[str, typer.Option("--version", help="Program version (default: latest).")] = "",
    state: Annotated[
        bool, typer.Option("--state", help="Also print the DSPy JSON state (demos, instructions).")
    ] = False,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """One program: scores, cost, lineage (and its DSPy state with --state)."""
    with rpc_errors():
        response = _client(address).get_program(name, version)
    if json_output:
        data = {"program": to_dict(response.program)}
        if state:
            data["state"] = json.loads(response.state_json)
        print_json(data)
        return
    _print_program(response.program)
    console.print("parameters: " + response.program.parameters_json)
    if state:
        console.print_json(response.state_json)


@programs_app.command("promote")
def promote_program(
    program: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: the latest version).")],
    force: Annotated[
        bool, typer.Option("--force", help="Serve it even without a better benchmark score.")
    ] = False,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Make a version the one chat serves for NAME, if it beats the served one on the benchmark."""
    with rpc_errors():
        response = _client(address).promote(program, force=force)
    if json_output:
        print_json(to_dict(response))
        return
    served = f"{response.program.name}@{response.program.version}"
    before = response.previous_version or "none"
    console.print(f"[bold]{served}[/] is served (before: {before}): {response.reason}")


def register(app: typer.Typer) -> None:
    app.command("optimize")(optimize)
    app.command("evaluate")(evaluate)
    app.add_typer(programs_app, name="programs")
