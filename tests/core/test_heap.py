"""core/heap.py: a serving process moves what it has loaded into the permanent generation; any other
process (tests, CLI) is left alone."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import gc
from tutorforge.core import heap
class Loaded:  # a stand-in for a model's tracked objects
    pass
kept = [Loaded() for _ in range(1000)]
heap.settle()
before = gc.get_freeze_count()
heap.enable()
heap.settle()
print(before, gc.get_freeze_count())
"""


def test_settle_freezes_only_in_a_serving_process() -> None:
    # A fresh interpreter: freezing is process-wide and must not leak into the test process.
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120)
    before, after = map(int, result.stdout.split())
    assert before == 0 and after >= 1000
