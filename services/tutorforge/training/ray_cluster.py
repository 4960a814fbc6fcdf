"""The process's connection to Ray: the configured cluster (`settings.training.ray_address`: `ray://head:10001`
for a KubeRay RayCluster, or `auto`), or a local head this process starts and stops, and the environment
Ray workers get. The training runner calls `ensure_ray` before it launches Ray Train; the service calls
`shutdown_ray` when it stops."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tutorforge.core.errors import FailedPrecondition, Unavailable
from tutorforge.core.settings import Settings

# Ray reads this once, when it is first imported (nothing imports it before this module): a head this
# process starts, and the driver, stay on 127.0.0.1. A KubeRay cluster is reached by its ray:// address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

_WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TUTORFORGE_HOME")

_ray_lock = threading.Lock()
# Set on shutdown: lets the thread that holds Ray (and the local head process) end.
_ray_released = threading.Event()
_local_head: list[subprocess.Popen] = []
HEAD_START_TIMEOUT_SECONDS = 180.0


def ensure_ray(settings: Settings) -> None:
    """Connect to Ray once per process: the configured cluster address, or a local head started for it.

    The local head is a `ray start --head --block` child process, not `ray.init()`'s built-in one:
    `ray.init()` forks Ray's processes with a Python `preexec_fn`, which is not safe in a process full of
    gRPC and torch threads (children crashed in fork handlers). The head runs under
    `setpriv --pdeathsig KILL`, bound to a thread that lives until `shutdown_ray()`, so it dies with the
    service even on SIGKILL (PR_SET_PDEATHSIG fires when the *thread* that started a child ends)."""
    import ray

    with _ray_lock:
        if ray.is_initialized():
            return
        address = settings.training.ray_address
        if address.startswith(("http://", "https://")):
            raise FailedPrecondition(
                f"training.ray_address={address!r} is a Ray Job Submission URL; the training service drives "
                "Ray Train as a client: use the head's client address ray://HEAD:10001"
            )
        # No token handshake with the cluster this process starts itself.
        if not address:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
        started = threading.Event()
        failures: list[BaseException] = []

        def hold() -> None:
            try:
                target = address or _start_local_head()
                ray.init(
                    address=target,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    runtime_env={"env_vars": worker_env(settings)},
                )
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                failures.append(error)
            finally:
                started.set()
            if not failures:
                _ray_released.wait()

        _ray_released.clear()
        threading.Thread(target=hold, name="ray-driver", daemon=True).start()
        started.wait()
        if failures:
            _stop_local_head()
            raise Unavailable(
                f"cannot start or reach Ray ({address or 'local'}): {failures[0]}"
            ) from failures[0]


def _start_local_head() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "KILL", *command]
    log_file = tempfile.NamedTemporaryFile(prefix="tutorforge-ray-head-", suffix=".log", delete=False)  # noqa: SIM115
    with log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    _local_head.append(process)
    deadline = time.monotonic() + HEAD_START_TIMEOUT_SECONDS
    log_path = Path(log_file.name)
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if "Ray runtime started" in output:
            return f"127.0.0.1:{port}"
        if process.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with {process.returncode}: {output[-800:]}")
        time.sleep(0.5)
    raise RuntimeError(
        f"`ray start --head` was not up after {HEAD_START_TIMEOUT_SECONDS:.0f} s (log: {log_path})"
    )


def _stop_local_head() -> None:
    while _local_head:
        process = _local_head.pop()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def shutdown_ray() -> None:
    import ray

    with _ray_lock:
        if ray.is_initialized():
            ray.shutdown()
        _stop_local_head()
        _ray_released.set()


def worker_env(settings: Settings) -> dict[str, str]:
    env = {name: os.environ[name] for name in _WORKER_ENV if name in os.environ}
    if settings.models.offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["RAY_TRAIN_V2_ENABLED"] = "1"
    return env

