"""Start-up measurement for the embedded engine: which dtype and how many torch threads run decode
steps fastest on this CPU right now.

Why measure instead of reading CPU flags: bf16 matmuls are fast only with native instructions
(avx512_bf16/AMX), and two OpenMP threads on a shared or CPU-limited node measured 2-30x slower per
matmul than one, while on a dedicated node they are ~1.5x faster. A few decode steps at batch 1 and at a
full batch (about a second per candidate) settle it for the node the engine actually runs on."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tutorforge.core.models import cpu_supports_bf16

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class Choice:
    dtype: str
    threads: int
    # Why: "measured" or "set in settings", and the per-candidate step times (ms at batch 1 / batch N).
    source: str
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)
    # The attention of multi-row decode steps: "native" (kernels.py) or "sdpa".
    attention: str = "sdpa"

    def describe(self) -> str:
        measured = ", ".join(f"{name} {one:.0f}/{full:.0f} ms" for name, (one, full) in self.timings.items())
        return (
            f"{self.dtype}, {self.threads} thread(s) ({self.source}{': ' + measured if measured else ''}), "
            f"{self.attention} decode attention"
        )


def candidates(dtype_setting: str, threads_setting: int) -> tuple[list[str], list[int]]:
    """The dtypes and thread counts worth timing; a fixed setting is the only candidate."""
    if dtype_setting != "auto":
        dtypes = [dtype_setting]
    else:
        # Without native bf16 instructions bf16 matmuls are emulated: never faster, not worth a load.
        dtypes = ["float32", "bfloat16"] if cpu_supports_bf16() else ["float32"]
    if threads_setting > 0:
        threads = [threads_setting]
    else:
        # One core stays with the serving threads (gRPC, the scheduler, detokenizing): a lone step is
        # faster on every core, but served on both cores of a 2-core node the int8 engine ran 1.8x (alone)
        # to 2.4x (mixed batch) slower than on one, and bfloat16 lost 17% on the 16-row batch.
        spare = max(1, (os.cpu_count() or 1) - 1)
        threads = sorted({1, min(2, spare), spare})
    return dtypes, threads


def time_steps(step: Callable[[int], Any], rows: int, repeats: int = 5) -> tuple[float, float]:
    """Best-of-`repeats` milliseconds of one decode step at batch 1 and at batch `rows`."""
    step(1)
    step(rows)
    results = []
    for batch in (1, rows):
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            step(batch)
            best = min(best, time.perf_counter() - started)
        results.append(best * 1000)
    return results[0], results[1]


def pick(timings: dict[tuple[str, int], tuple[float, float]], rows: int) -> tuple[str, int]:
    """The candidate with the best geometric mean of batch-1 and full-batch tokens/s."""

    def score(item: tuple[tuple[str, int], tuple[float, float]]) -> float:
        one, full = item[1]
        return (1.0 / one) * (rows / full)

    return max(timings.items(), key=score)[0]


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def dtype_of(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name)
