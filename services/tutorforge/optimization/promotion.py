"""Promotion: which version of a program chat serves for its bare name.

A version replaces the served one only if its benchmark score (the mean pedagogical score an evaluation on
the benchmark recorded in its `info.json`, `benchmark.pedagogical_score.mean`) is higher than the served
version's, or with `force`. A program made
for another base model is never promoted: chat would run its instructions and demonstrations on a model
they were not scored with."""

from __future__ import annotations

from dataclasses import dataclass

from tutorforge.artifacts.programs import ProgramInfo, ProgramRepository, parse_reference
from tutorforge.core.errors import FailedPrecondition

_BENCHMARK_HINT = "benchmark it first (`tutorforge evaluate --set tutor-benchmark`), or promote with --force"
# The figure of the recorded benchmark summary (evaluation.TargetMetrics.summary) that promotion compares.
FIGURE = "pedagogical_score"


@dataclass
class Promotion:
    program: ProgramInfo
    # The version served before; "" when none was (its latest version served by default is this one).
    previous_version: str
    reason: str


def benchmark_mean(info: ProgramInfo) -> float | None:
    """The version's recorded benchmark mean score, None when it has none."""
    figure = info.benchmark.get(FIGURE)
    mean = figure.get("mean") if isinstance(figure, dict) else None
    return float(mean) if isinstance(mean, int | float) else None


def check_base_model(info: ProgramInfo, base_model: str) -> None:
    """FailedPrecondition when `info` was compiled for a base model other than `base_model`."""
    if info.base_model and info.base_model != base_model:
        raise FailedPrecondition(
            f"program {info.ref} was compiled for base model {info.base_model!r}, but this server runs "
            f"{base_model!r}; optimize it again on {base_model!r}"
        )


def promote(programs: ProgramRepository, reference: str, base_model: str, force: bool = False) -> Promotion:
    """Serve `reference` (NAME = its latest version, or NAME@VERSION) for NAME; refused = nothing changes."""
    name, version = parse_reference(reference)
    versions = programs.versions(name)
    candidate = programs.get(name, version or (versions[-1] if versions else ""))
    check_base_model(candidate, base_model)
    served = programs.get(name, programs.served_version(name))
    if served.version == candidate.version:
        programs.set_served(name, candidate.version)
        return Promotion(candidate, served.version, "already the served version")
    if force:
        reason = "forced"
    else:
        new, current = benchmark_mean(candidate), benchmark_mean(served)
        if new is None:
            raise FailedPrecondition(f"program {candidate.ref} has no benchmark score: {_BENCHMARK_HINT}")
        if current is None:
            raise FailedPrecondition(
                f"the served version {served.ref} has no benchmark score to compare with: {_BENCHMARK_HINT}"
            )
        if new <= current:
            raise FailedPrecondition(
                f"program {candidate.ref} does not beat the served {served.ref} on the benchmark "
                f"({new:.3f} <= {current:.3f}); promote with --force to serve it anyway"
            )
        reason = f"benchmark {new:.3f} > {current:.3f} ({served.version})"
    programs.set_served(name, candidate.version)
    return Promotion(candidate, served.version, reason)
