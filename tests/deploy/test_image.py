"""The container image, built for real with podman (runc, a debootstrap minbase base, the host CA bundle
for pip) and run the way the chart runs it: non-root, read-only root filesystem, writable tmpfs only
where the chart mounts emptyDirs, no capabilities. The container must answer gRPC health for every
service it hosts, with the models already in the image. Slow (minutes); skipped where podman or
debootstrap is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import grpc
import pytest
from deploy_helpers import REPO
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tooling import missing_tool
from tutorforge.core.settings import SERVICE_NAMES

pytestmark = pytest.mark.slow

IMAGE = os.environ.get("TUTORFORGE_TEST_IMAGE", "localhost/tutorforge:test")
GRPC_NAMES = {
    "retrieval": "tutorforge.v1.RetrievalService",
    "datasets": "tutorforge.v1.DatasetService",
    "training": "tutorforge.v1.TrainingService",
    "optimization": "tutorforge.v1.OptimizationService",
    "inference": "tutorforge.v1.InferenceService",
}
CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"


def _podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)))
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check, env=env)


@pytest.fixture(scope="module")
def image():
    if shutil.which("podman") is None:
        missing_tool("podman is not installed (apt-get install podman runc)")
    if os.environ.get("TUTORFORGE_TEST_IMAGE"):
        yield IMAGE  # built elsewhere (CI)
        return
    has_base = _podman("image", "exists", "localhost/tutorforge-base:bookworm", check=False).returncode == 0
    if not has_base and shutil.which("debootstrap") is None:
        missing_tool("no base image and no debootstrap to make one (apt-get install debootstrap)")
    started = time.monotonic()
    # Niced: the build competes with everything else on the machine.
    result = subprocess.run(
        ["nice", "-n", "19", "bash", str(REPO / "deploy" / "build-image.sh"), "--debootstrap-base", "--tag", IMAGE],
        capture_output=True, text=True, timeout=3600, check=False,
        env=dict(os.environ, CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"image {IMAGE} built in {time.monotonic() - started:.0f} s")
    yield IMAGE
    # Each build leaves ~5 GB (the image and its builder stage); repeated runs would fill the disk.
    _podman("rmi", "--force", IMAGE, check=False)
    _podman("image", "prune", "--force", timeout=600, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _services_in_tree() -> list[str]:
    return [name for name in SERVICE_NAMES if (REPO / "services" / "tutorforge" / name / "servicer.py").is_file()]


def test_final_stage_is_non_root_without_build_tools_with_baked_models(image):
    config = _podman("image", "inspect", image, "--format", "{{.Config.User}} {{json .Config.Entrypoint}}").stdout
    assert config.split()[0] == "10001:10001"
    assert '["tutorforge","serve"]' in config
    probe = _podman("run", "--rm", "--entrypoint", "/bin/sh", image, "-c",
                    "for tool in gcc cc g++ make ld; do command -v $tool; done; "
                    "ls /opt/tutorforge/models/smollm2-135m-instruct; id -u")
    # KubeRay runs `bash -lc 'ray start ...'`: a login shell must still find the venv's ray.
    ray = _podman("run", "--rm", "--entrypoint", "/bin/bash", image, "-lc", "command -v ray tutorforge")
    assert ray.stdout.split() == ["/opt/venv/bin/ray", "/opt/venv/bin/tutorforge"]
    lines = probe.stdout.split()
    assert lines[-1] == "10001"
    assert "config.json" in lines and any(name.endswith(".safetensors") for name in lines)
    assert not any(line.startswith("/") for line in lines), f"build tools in the final stage: {lines}"


def test_container_answers_grpc_health_like_a_restricted_pod(image):
    services = _services_in_tree()
    assert services, "no service has a servicer in the tree"
    port = _free_port()
    name = f"tutorforge-health-{port}"
    # The chart's pod: read-only root, emptyDirs for /tmp, home and caches, no capabilities, an API token.
    run = _podman(
        "run", "-d", "--rm", "--name", name, "--network", "host", "--read-only",
        # Anonymous volumes start owned like the image's folders (uid 10001), as emptyDirs with fsGroup do.
        "--tmpfs", "/tmp:rw,size=512m", "-v", "/var/lib/tutorforge", "-v", "/var/cache/tutorforge",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-e", "TUTORFORGE_SERVER__API_TOKEN=image-test-token", "-e", "TUTORFORGE_STORE=/var/lib/tutorforge/store",
        image, *services, "--host", "127.0.0.1", "--port", str(port),
    )
    container = run.stdout.strip()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 600
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            alive = _podman("container", "exists", container, check=False).returncode == 0
            if not alive or time.monotonic() > deadline:
                logs = _podman("logs", container, check=False)
                pytest.fail(f"container never served health: {logs.stdout[-3000:]}{logs.stderr[-3000:]}")
            time.sleep(2)
        for service in services:
            response = stub.Check(health_pb2.HealthCheckRequest(service=GRPC_NAMES[service]), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        # The baked chat model loads as uid 10001, offline, from the read-only image.
        loaded = _podman("exec", container, "python", "-c",
                         "from tutorforge.core.models import chat_model_path, load_chat_model; "
                         "from tutorforge.core.settings import Settings; s = Settings().models; "
                         "print(chat_model_path(s), load_chat_model(s).num_parameters())", timeout=300)
        path, parameters = loaded.stdout.split()[-2:]
        assert path == "/opt/tutorforge/models/smollm2-135m-instruct" and int(parameters) > 100_000_000
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="tutorforge.v1.NoSuchService"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        channel.close()
    finally:
        _podman("rm", "-f", "-v", container, check=False)

