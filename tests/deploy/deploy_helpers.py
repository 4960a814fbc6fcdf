"""Helpers of the deployment tests: chart rendering and a fake Kubernetes API server that speaks the real REST protocol (JSON, Status
errors, JSON patch with `test` preconditions, resourceVersion/generation) on a loopback port."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tutorforge"
PROFILES = sorted(path.stem for path in (CHART / "profiles").glob("*.yaml"))
RELEASE = "tf"
NAMESPACE = "tutor"
KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> Path:
    return REPO / "tools" / name / name


# The chart requires an explicit API token and Qdrant key (it never generates them); tests that check that
# pass their own.
TEST_TOKEN = "test-token-0123456789abcdef0123456789abcdef"
TEST_QDRANT_KEY = "test-qdrant-key-0123456789abcdef0123456789"


def helm_template(helm: Path, *profiles: str, check: bool = True, **values: Any) -> str:
    values = {"apiToken__value": TEST_TOKEN, "qdrant__apiKey__value": TEST_QDRANT_KEY, **values}
    command = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for profile in profiles:
        command += ["-f", str(CHART / "profiles" / f"{profile}.yaml")]
    for dotted, value in values.items():
        command += ["--set-json", f"{dotted.replace('__', '.')}={json.dumps(value)}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return result.stdout if result.returncode == 0 else result.stderr


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template in a workload, including the RayCluster's head and worker groups."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [doc["spec"]["template"]]
    if doc["kind"] == "RayCluster":
        spec = doc["spec"]
        return [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec.get("workerGroupSpecs", [])]
    return []


# --- a fake Kubernetes API server -------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    content_type: str
    authorization: str
    body: Any


@dataclass
class FakeKubeAPI:
    url: str = ""
    deployments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    # Called before a PATCH is applied (e.g. to simulate another writer).
    before_patch: Callable[[FakeKubeAPI, str, str], None] | None = None
    # GETs after a patch until the rollout reports complete.
    rollout_reads: int = 0
    _pending: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_deployment(self, deployment: dict[str, Any]) -> None:
        deployment = copy.deepcopy(deployment)
        meta = deployment["metadata"]
        meta.update(resourceVersion="1000", generation=1, uid="0e8c1f6a-0000-4000-8000-000000000001")
        replicas = deployment["spec"].get("replicas", 1)
        deployment["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                                "availableReplicas": replicas, "readyReplicas": replicas}
        self.deployments[(meta["namespace"], meta["name"])] = deployment

    def bump(self, namespace: str, name: str, mutate: Callable[[dict[str, Any]], None]) -> None:
        """Another writer changes the object (new resourceVersion)."""
        deployment = self.deployments[(namespace, name)]
        mutate(deployment)
        deployment["metadata"]["resourceVersion"] = str(int(deployment["metadata"]["resourceVersion"]) + 1)

    def patches(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "PATCH"]


_DEPLOYMENT_PATH = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/?]+)$")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/remove/replace/test, as the API server applies application/json-patch+json."""
    document = copy.deepcopy(document)
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        op = operation["op"]
        if op == "test":
            current = target[int(last)] if isinstance(target, list) else target.get(last)
            if current != operation["value"]:
                raise ValueError(f"testing value {operation['path']} failed")
        elif op == "add":
            if isinstance(target, list):
                target.insert(len(target) if last == "-" else int(last), operation["value"])
            else:
                target[last] = operation["value"]
        elif op == "replace":
            if isinstance(target, list):
                target[int(last)] = operation["value"]
            elif last not in target:
                raise ValueError(f"replace operation does not apply: doc is missing path: {operation['path']}")
            else:
                target[last] = operation["value"]
        elif op == "remove":
            del target[int(last) if isinstance(target, list) else last]
        else:
            raise ValueError(f"unsupported operation {op}")
    return document


class KubeHandler(BaseHTTPRequestHandler):
    api: FakeKubeAPI

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[re.Match | None, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.api.requests.append(RecordedRequest(self.command, self.path, self.headers.get("Content-Type", ""),
                                                 self.headers.get("Authorization", ""), body))
        return _DEPLOYMENT_PATH.match(self.path.split("?")[0]), body

    def do_GET(self) -> None:
        match, _ = self._record()
        api = self.api
        with api._lock:
            key = match.groups() if match else None
            if key not in api.deployments:
                name = key[1] if key else self.path
                return self._reply(404, _status(404, "NotFound", f'deployments.apps "{name}" not found'))
            deployment = api.deployments[key]
            if key in api._pending:
                api._pending[key] -= 1
                if api._pending[key] <= 0:
                    del api._pending[key]
                    replicas = deployment["spec"].get("replicas", 1)
                    deployment["status"].update(observedGeneration=deployment["metadata"]["generation"],
                                                updatedReplicas=replicas, availableReplicas=replicas)
            self._reply(200, deployment)

    def do_PATCH(self) -> None:
        match, body = self._record()
        api = self.api
        if self.headers.get("Content-Type") != "application/json-patch+json":
            return self._reply(415, _status(415, "UnsupportedMediaType", "this fake accepts JSON patches only"))
        key = match.groups() if match else None
        if api.before_patch and key:
            api.before_patch(api, *key)
        with api._lock:
            if key not in api.deployments:
                return self._reply(404, _status(404, "NotFound", f'deployments.apps "{key[1] if key else "?"}" not found'))
            current = api.deployments[key]
            try:
                patched = apply_json_patch(current, body)
            except (ValueError, KeyError, IndexError) as error:
                return self._reply(422, _status(422, "Invalid", f"the server rejected our request: {error}"))
            meta = patched["metadata"]
            meta["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            if patched["spec"] != current["spec"]:
                meta["generation"] = current["metadata"]["generation"] + 1
                # The controller rolls the pods: reported updated after `rollout_reads` reads.
                patched["status"].update(updatedReplicas=0, availableReplicas=0)
                api._pending[key] = api.rollout_reads
                if api.rollout_reads == 0:
                    replicas = patched["spec"].get("replicas", 1)
                    patched["status"].update(observedGeneration=meta["generation"], updatedReplicas=replicas,
                                             availableReplicas=replicas)
                    del api._pending[key]
            api.deployments[key] = patched
            self._reply(200, patched)
