"""Fixtures for the deployment tests: helm (fetched from PyPI by scripts/get-k8s-tools.sh into tools/),
chart rendering, and the fake Kubernetes API server of deploy_helpers on a loopback port."""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tooling import missing_tool
import yaml
from deploy_helpers import REPO, FakeKubeAPI, KubeHandler, helm_template, tool


@pytest.fixture(scope="session")
def helm() -> Path:
    binary = tool("helm")
    if not binary.exists():
        result = subprocess.run(["bash", str(REPO / "scripts" / "get-k8s-tools.sh")], capture_output=True, text=True, check=False)
        if result.returncode != 0 or not binary.exists():
            missing_tool(f"helm is not in tools/ and scripts/get-k8s-tools.sh could not fetch it: {result.stderr[-500:]}")
    return binary


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., list[dict[str, Any]]]:
    """Render the chart (helm template) with profiles from charts/tutorforge/profiles and --set values."""
    cache: dict[tuple, list[dict[str, Any]]] = {}

    def _render(*profiles: str, **values: Any) -> list[dict[str, Any]]:
        key = (profiles, tuple(sorted((k, json.dumps(v)) for k, v in values.items())))
        if key not in cache:
            cache[key] = [doc for doc in yaml.safe_load_all(helm_template(helm, *profiles, **values)) if doc]
        return copy.deepcopy(cache[key])

    return _render


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    handler = type("Handler", (KubeHandler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture
def apps_api(fake_kube: FakeKubeAPI):
    """The real kubernetes client's AppsV1Api, pointed at the fake server with a bearer token."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = fake_kube.url
    configuration.api_key = {"BearerToken": "test-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    api_client = client.ApiClient(configuration)
    yield client.AppsV1Api(api_client)
    api_client.close()
