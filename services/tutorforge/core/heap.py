"""Keep what is loaded once out of Python's full garbage collections.

A full (generation 2) collection walks every tracked object while holding the GIL: no other thread of the
process runs, health checks included. With the chat model, its tokenizer tables, the embedder and the
libraries loaded, one took 220-360 ms under bench/load.py. Modules, models and vocabularies live as long as
a serving process, so after each such load they are moved into the permanent generation (`gc.freeze`):
later collections skip them, and cyclic garbage made afterwards is collected as before.

Only a serving process (`tutorforge serve`) turns this on: one that starts and stops many servers or
engines (a test run) would keep the frozen objects of the stopped ones for good."""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_enabled = False


def enable() -> None:
    """This process serves until it exits: settle after each large load from now on."""
    global _enabled
    _enabled = True


def settle() -> None:
    """Call after a large load: collect once (the load's own garbage), then freeze what survived."""
    if not _enabled:
        return
    with _lock:
        gc.collect()
        gc.freeze()
