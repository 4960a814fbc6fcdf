"""The tutoring benchmark: held-out student turns (services/tutorforge/samples/benchmark/tutor_turns.jsonl),
answered by each target through the tutor chat with retrieval — the path chatbots take — and scored by the
optimization service's Evaluate (the same code as every evaluation report): guiding-question rate,
answer-reveal rate, the seed pedagogical score (context 40% / elements 30% / length 30%), citations and
groundedness in the cited passages, mean length; each with a 95% bootstrap interval. Writes JSON, Markdown
and PNG into --out, prints the table and the ratios to the first target.

    python bench/tutor_quality.py --store demo-output/store --target base --target adapter:socratic-tutor \\
        --target program:socratic-tutor-prompt --out bench-results/tutor

Without --address it hosts every service in this process on the given store (sample material is ingested
when the store has none); with --address it measures a running server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", default=[], help="base, adapter:NAME, program:NAME[@V][+ADAPTER]")
    parser.add_argument("--store", type=Path, help="artifact store folder to host the services on")
    parser.add_argument("--address", default="", help="measure a running server instead (HOST:PORT)")
    parser.add_argument("--max-turns", type=int, default=0, help="cap on turns (0 = all)")
    parser.add_argument("--max-tokens", type=int, default=96, help="tokens per reply")
    parser.add_argument("--threads", type=int, default=8, help="concurrent chats (the engine batches them)")
    parser.add_argument("--no-retrieval", action="store_true", help="answer without retrieval (not the chat path)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tutor-quality"), help="report folder")
    args = parser.parse_args()
    if not args.address and not args.store:
        parser.error("give --store (host the services here) or --address (a running server)")

    from rich.console import Console
    from rich.table import Table
    from tutorforge.core.cli_support import connect
    from tutorforge.artifacts.reports import comparison_rows, figure

    console = Console(width=None if sys.stdout.isatty() else 180)
    running = None
    address = args.address
    if not address:
        running, address = _host(args.store, console)
    try:
        started = time.perf_counter()
        response = benchmark(connect(address), args.target or ["base"], args, console)
    finally:
        if running is not None:
            running.stop(grace=5)
    if response is None:
        return 1
    save_files(response, args.out)
    report = response.report
    header, rows = comparison_rows(report.targets)
    table = Table(*header, title=f"tutor benchmark: {report.targets[0].examples} held-out turns per target")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    first = report.targets[0]
    ratios = {}
    for target in report.targets[1:]:
        mean, low, high = figure(target, "pedagogical_score")
        base_mean, base_low, base_high = figure(first, "pedagogical_score")
        # Apart either way: a target far below the first one does not overlap it either.
        overlap = low <= base_high and high >= base_low
        ratios[target.target] = {
            "score_ratio": mean / base_mean if base_mean else None,
            "intervals_overlap": overlap,
        }
        console.print(
            f"{target.target}: pedagogical score {mean / base_mean:.2f}× {first.target}"
            f" ({'intervals overlap' if overlap else 'intervals do not overlap'})"
        )
    summary = {
        "evaluation_id": report.evaluation_id,
        "seconds": round(time.perf_counter() - started, 1),
        "ratios_to_first_target": ratios,
        "files": sorted(file.path for file in response.files),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"report in {args.out}/ ({', '.join(summary['files'])}) after {summary['seconds']} s")
    return 0


def benchmark(tf, targets: list[str], args: argparse.Namespace, console):
    """One side-by-side Evaluate of `targets` on the benchmark (args: max_turns, max_tokens, threads,
    no_retrieval) through the SDK (`tf`: a Tutorforge), followed live; the GetEvaluation response with its
    files, or None when it failed."""
    from tutorforge.core.cli_support import follow_and_get
    from tutorforge.optimization.turns import BENCHMARK_SET

    started = tf.optimization.evaluate(
        targets,
        evaluation_set=BENCHMARK_SET,
        max_examples=args.max_turns,
        max_tokens=args.max_tokens,
        threads=args.threads,
        use_retrieval=not args.no_retrieval,
    )
    run = follow_and_get(started, label="benchmark", out=console)
    if not run.result:
        console.print(f"[red]benchmark failed:[/] {run.error or run.message}")
        return None
    return tf.optimization.get_evaluation(run.result, include_files=True)


def save_files(response, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for file in response.files:
        path = out / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.content)


def _host(store: Path, console):
    """Every service in this process on `store`, with the sample material ingested if it has none."""
    from tutorforge.client import Connection, RetrievalClient
    from tutorforge.core.server import start_server
    from tutorforge.pipeline.demo import demo_settings
    from tutorforge.pipeline.stages import sample_documents

    settings = demo_settings(store.parent if store.name == "store" else store)
    settings.store = str(store.resolve())
    running = start_server(settings, ["all"], 0)
    with Connection(running.address) as connection:
        retrieval = RetrievalClient(connection)
        if next(retrieval.documents(page_size=1), None) is None:
            with console.status("ingesting the sample material"):
                retrieval.ingest(sample_documents())
    return running, running.address


if __name__ == "__main__":
    sys.exit(main())
