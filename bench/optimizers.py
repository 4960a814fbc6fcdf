"""Every optimizer in the registry, compiled on the same dataset over the same target, then measured side by
side on the held-out tutoring benchmark: per optimizer its benchmark score with a 95% interval, the ratio to
the uncompiled target (and whether the intervals are apart), LM calls and minutes spent compiling, and its
validation score before → after. Against a running server:

    python bench/optimizers.py --address 127.0.0.1:50051 --dataset tutor-socratic --optimizer mipro \\
        --optimizer bootstrap-random-search --max-train 24 --max-val 16 --out bench-results/optimizers

Without --adapter the programs are compiled over the base model; with it, over that adapter. Writes
table.md and summary.json (plus the benchmark report) into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from tutor_quality import benchmark, save_files


def main() -> int:
    from tutorforge.optimization.optimizers import REGISTRY

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="the tutorforge server (HOST:PORT)")
    parser.add_argument("--dataset", required=True, help="dataset whose train/validation splits are compiled on")
    parser.add_argument("--adapter", default="", help="compile over this adapter (default: the base model)")
    parser.add_argument("--optimizer", action="append", choices=list(REGISTRY), help="(repeatable; default: all)")
    parser.add_argument("--prefix", default="bench", help="program names: PREFIX-OPTIMIZER")
    parser.add_argument("--max-train", type=int, default=24)
    parser.add_argument("--max-val", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=96, help="tokens per reply, compiling and measuring")
    parser.add_argument("--max-turns", type=int, default=0, help="cap on benchmark turns (0 = all 96)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/optimizers"))
    args = parser.parse_args()
    args.no_retrieval = False

    from rich.console import Console
    from tutorforge.core.cli_support import connect
    from tutorforge.artifacts.reports import figure

    console = Console(width=None if sys.stdout.isatty() else 180)
    tf = connect(args.address)
    compiled = {}
    for name in args.optimizer or list(REGISTRY):
        started = time.perf_counter()
        run = _compile(tf, name, args, console)
        compiled[name] = {
            "program": run.result,
            "state": run.state,
            "error": run.error,
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "lm_calls": int(run.metrics.get("lm_calls", 0)),
            "validation": [run.metrics.get("baseline_score"), run.metrics.get("optimized_score")],
        }
        console.print(f"{name}: {compiled[name]}")
    reference = f"adapter:{args.adapter}" if args.adapter else "base"
    targets = [reference] + [
        f"program:{c['program']}" + (f"+{args.adapter}" if args.adapter else "+base") for c in compiled.values() if c["program"]
    ]
    response = benchmark(tf, targets, args, console)
    if response is None:
        return 1
    save_files(response, args.out)
    scores = {target.target: figure(target, "pedagogical_score") for target in response.report.targets}
    base_mean, _, base_high = scores[reference]
    lines = [
        f"| optimizer | benchmark score | × {reference} | LM calls | minutes | validation before → after |",
        "|---|---|---|---|---|---|",
        f"| (none: {reference}) | {base_mean:.3f} [{scores[reference][1]:.3f}–{base_high:.3f}] | 1.00 | 0 | 0 | |",
    ]
    for name, result in compiled.items():
        target = next((t for t in scores if result["program"] and t.startswith(f"program:{result['program']}")), None)
        if target is None:
            lines.append(f"| {name} | failed: {result['error'][:80]} | | {result['lm_calls']} | {result['minutes']} | |")
            continue
        mean, low, high = scores[target]
        apart = "apart" if low > base_high else "overlap"
        before, after = (f"{v:.3f}" if v is not None else "?" for v in result["validation"])
        lines.append(
            f"| {name} | {mean:.3f} [{low:.3f}–{high:.3f}] | {mean / base_mean:.2f} ({apart}) | {result['lm_calls']} "
            f"| {result['minutes']} | {before} → {after} |"
        )
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    summary = {"evaluation_id": response.report.evaluation_id, "reference": reference, "optimizers": compiled}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(table)
    return 0


def _compile(tf, name: str, args: argparse.Namespace, console):
    """StartOptimization (through the SDK, `tf`) with the registry entry `name`, followed to its end; the
    finished run."""
    from tutorforge.core.cli_support import follow_and_get
    from tutorforge.optimization.cli import OPTIMIZER_CHOICES

    started = tf.optimization.optimize(
        f"{args.prefix}-{name}",
        args.dataset,
        optimizer=OPTIMIZER_CHOICES[name],
        adapter=args.adapter,
        budget={"threads": args.threads, "max_train_examples": args.max_train, "max_validation_examples": args.max_val},
        seed=args.seed,
        use_retrieval=True,
        max_tokens=args.max_tokens,
    )
    return follow_and_get(started, label=name, out=console)


if __name__ == "__main__":
    sys.exit(main())
