"""`tutorforge adapters deploy` domain logic: the real kubernetes client patches the chart's own TGI
Deployment on a fake API server (real REST + JSON patch), and a fake vLLM server speaks vLLM's runtime
LoRA endpoints over HTTP on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import NAMESPACE, RELEASE, FakeKubeAPI, find
from safetensors.numpy import save_file
from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.cli import app
from tutorforge.core.errors import FailedPrecondition, NotFound
from tutorforge.deploy.rollout import RESTARTED_AT, deploy_adapter, parse_adapter_list, sync_adapters
from typer.testing import CliRunner

TGI = f"{RELEASE}-tutorforge-tgi"


def _register(settings, name: str, base_model: str = "SmolLM2-135M-Instruct", times: int = 1, *, tmp: Path):
    folder = tmp / f"{name}-src"
    folder.mkdir(exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": np.zeros((4, 8), dtype=np.float32),
               f"{prefix}.lora_B.weight": np.zeros((8, 4), dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    registry = AdapterRegistry(ArtifactStore(settings.store_url))
    return [registry.register(folder, name, base_model) for _ in range(times)][-1]


@pytest.fixture
def tgi_settings(settings):
    settings.inference.engine = "tgi"
    settings.inference.engine_url = f"http://{TGI}.{NAMESPACE}.svc.cluster.local:8080"
    return settings


@pytest.fixture
def chart_tgi(render, fake_kube: FakeKubeAPI) -> dict:
    """The TGI Deployment exactly as the chart renders it (tgi profile: two adapters at start)."""
    deployment = find(render("tgi"), "Deployment", TGI)[0]
    fake_kube.add_deployment(deployment)
    return deployment


def _tgi_env(fake_kube: FakeKubeAPI) -> str:
    container = fake_kube.deployments[(NAMESPACE, TGI)]["spec"]["template"]["spec"]["containers"][0]
    return next(var["value"] for var in container["env"] if var["name"] == "LORA_ADAPTERS")


def test_tgi_deploy_adds_the_adapter_and_rolls_the_deployment(tgi_settings, chart_tgi, fake_kube, apps_api, tmp_path):
    _register(tgi_settings, "geometry-tutor", times=3, tmp=tmp_path)  # v1..v3: the latest is deployed
    before = _tgi_env(fake_kube)
    assert before == "algebra-tutor=/adapters/algebra-tutor/v2,physics-tutor=/adapters/physics-tutor/v1"

    fake_kube.rollout_reads = 2  # the controller reports the new pods available on the 2nd read
    progress: list[str] = []
    result = deploy_adapter("geometry-tutor", tgi_settings, apps_api=apps_api, wait=True, timeout=20,
                            on_progress=progress.append)

    assert result.engine == "tgi" and result.changed and result.version == "v3"
    assert result.target == f"{NAMESPACE}/{TGI}"  # both taken from the engine URL's Service host
    assert _tgi_env(fake_kube) == before + ",geometry-tutor=/adapters/geometry-tutor/v3"
    stored = fake_kube.deployments[(NAMESPACE, TGI)]
    assert RESTARTED_AT in stored["spec"]["template"]["metadata"]["annotations"]
    assert stored["metadata"]["generation"] == 2
    assert progress == ["0/1 updated, 0/1 available", "1/1 updated, 1/1 available"]
    assert "rolled out" in result.message
    # The real client sent one guarded JSON patch with our credentials.
    (patch,) = fake_kube.patches()
    assert patch.path == f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{TGI}"
    assert patch.content_type == "application/json-patch+json"
    assert patch.authorization == "Bearer test-token"
    assert patch.body[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "1000"}
    # The rest of the chart's Deployment is untouched.
    untouched = json.loads(json.dumps(chart_tgi["spec"]["template"]["spec"]))
    untouched["containers"][0]["env"] = stored["spec"]["template"]["spec"]["containers"][0]["env"]
    assert stored["spec"]["template"]["spec"] == untouched


def test_tgi_new_version_replaces_the_entry_in_place_and_same_version_is_a_no_op(
    tgi_settings, chart_tgi, fake_kube, apps_api, tmp_path
):
    _register(tgi_settings, "algebra-tutor", times=3, tmp=tmp_path)
    result = deploy_adapter("algebra-tutor", tgi_settings, apps_api=apps_api)
    assert result.changed
    assert parse_adapter_list(_tgi_env(fake_kube)) == {
        "algebra-tutor": "algebra-tutor=/adapters/algebra-tutor/v3",
        "physics-tutor": "physics-tutor=/adapters/physics-tutor/v1",
    }
    again = deploy_adapter("algebra-tutor", tgi_settings, apps_api=apps_api)
    assert not again.changed and "already serves" in again.message
    assert len(fake_kube.patches()) == 1  # nothing rolled the second time


def test_tgi_retries_when_someone_else_changed_the_deployment(tgi_settings, chart_tgi, fake_kube, apps_api, tmp_path):
    _register(tgi_settings, "geometry-tutor", tmp=tmp_path)

    def other_writer(api: FakeKubeAPI, namespace: str, name: str) -> None:
        if len(api.patches()) == 1:  # only before our first attempt
            api.bump(namespace, name, lambda d: d["spec"].update(replicas=3))

    fake_kube.before_patch = other_writer
    result = deploy_adapter("geometry-tutor", tgi_settings, apps_api=apps_api)
    assert result.changed
    stored = fake_kube.deployments[(NAMESPACE, TGI)]
    assert stored["spec"]["replicas"] == 3  # the other change survives
    assert "geometry-tutor=/adapters/geometry-tutor/v1" in _tgi_env(fake_kube)
    assert len(fake_kube.patches()) == 2


def test_tgi_updates_the_command_line_flag_and_creates_the_variable(tgi_settings, fake_kube, apps_api, tmp_path):
    _register(tgi_settings, "geometry-tutor", tmp=tmp_path)
    fake_kube.add_deployment({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "tgi-by-hand", "namespace": "serving"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "tgi"}}, "template": {
            "metadata": {"labels": {"app": "tgi"}},
            "spec": {"containers": [
                {"name": "sidecar", "image": "busybox"},
                {"name": "server", "image": "tgi", "args": ["--model-id", "/m", "--lora-adapters", "old=/adapters/old/v1"]},
            ]}}},
    })
    deploy_adapter("geometry-tutor", tgi_settings, namespace="serving", deployment="tgi-by-hand", apps_api=apps_api)
    stored = fake_kube.deployments[("serving", "tgi-by-hand")]["spec"]["template"]
    assert stored["spec"]["containers"][1]["args"][-1] == "old=/adapters/old/v1,geometry-tutor=/adapters/geometry-tutor/v1"
    assert stored["spec"]["containers"][0] == {"name": "sidecar", "image": "busybox"}
    assert RESTARTED_AT in stored["metadata"]["annotations"]


def test_tgi_errors_say_what_to_fix(tgi_settings, chart_tgi, fake_kube, apps_api, tmp_path):
    with pytest.raises(NotFound, match="not in the registry"):
        deploy_adapter("missing-tutor", tgi_settings, apps_api=apps_api)
    _register(tgi_settings, "geometry-tutor", tmp=tmp_path)
    with pytest.raises(NotFound, match="deployment other/tf-tutorforge-tgi does not exist"):
        deploy_adapter("geometry-tutor", tgi_settings, namespace="other", apps_api=apps_api)
    _register(tgi_settings, "llama-tutor", base_model="Llama-3-8B", tmp=tmp_path)
    with pytest.raises(FailedPrecondition, match="trained for base model 'Llama-3-8B'"):
        deploy_adapter("llama-tutor", tgi_settings, apps_api=apps_api)
    assert fake_kube.patches() == []


# --- vLLM ----------------------------------------------------------------------------------------------------


class _FakeVLLM(BaseHTTPRequestHandler):
    """vLLM's runtime LoRA endpoints: 200 on load, 400 when the name is loaded already, unload by name."""

    loaded: dict[str, str]
    calls: list[tuple[str, dict]]

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append((self.path, body))
        if self.path == "/v1/load_lora_adapter":
            if body["lora_name"] in self.loaded:
                return self._reply(400, json.dumps({"object": "error", "message":
                    f"The lora adapter '{body['lora_name']}' has already been loaded.", "code": 400}))
            self.loaded[body["lora_name"]] = body["lora_path"]
            return self._reply(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")
        if self.path == "/v1/unload_lora_adapter":
            self.loaded.pop(body["lora_name"], None)
            return self._reply(200, f"Success: LoRA adapter '{body['lora_name']}' removed successfully.")
        self._reply(404, json.dumps({"detail": "Not Found"}))

    def _reply(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def vllm() -> Iterator[type[_FakeVLLM]]:
    handler = type("Handler", (_FakeVLLM,), {"loaded": {}, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # as the chart sets the engine URL
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler
    server.shutdown()
    server.server_close()


def test_vllm_loads_at_run_time_and_replaces_a_loaded_version(settings, tmp_path, vllm):
    settings.inference.engine, settings.inference.engine_url = "openai", vllm.url
    _register(settings, "algebra-tutor", tmp=tmp_path)
    first = deploy_adapter("algebra-tutor", settings)
    assert first.engine == "vllm" and first.changed and "loaded" in first.message
    assert vllm.loaded == {"algebra-tutor": "/adapters/algebra-tutor/v1"}

    _register(settings, "algebra-tutor", tmp=tmp_path)  # v2
    second = deploy_adapter("algebra-tutor", settings)
    assert "replaced" in second.message
    assert vllm.loaded == {"algebra-tutor": "/adapters/algebra-tutor/v2"}
    assert [path for path, _ in vllm.calls] == [
        "/v1/load_lora_adapter", "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/load_lora_adapter"]


def test_vllm_without_runtime_updating_is_a_failed_precondition(settings, tmp_path, vllm):
    settings.inference.engine, settings.inference.engine_url = "openai", f"{vllm.url}/off"
    _register(settings, "algebra-tutor", tmp=tmp_path)
    with pytest.raises(FailedPrecondition, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        deploy_adapter("algebra-tutor", settings)


def test_embedded_engine_needs_no_rollout(settings, tmp_path):
    _register(settings, "algebra-tutor", tmp=tmp_path)
    result = deploy_adapter("algebra-tutor", settings)
    assert result.engine == "embedded" and not result.changed


def test_the_cli_deploys_through_the_adapters_group(settings, tmp_path, monkeypatch):
    # `tutorforge adapters deploy` is wired from tutorforge.deploy into inference's `adapters` group.
    _register(settings, "algebra-tutor", tmp=tmp_path)
    monkeypatch.setenv("TUTORFORGE_STORE", settings.store_url)
    monkeypatch.setenv("TUTORFORGE_INFERENCE__ENGINE", "embedded")
    deployed = CliRunner().invoke(app, ["adapters", "deploy", "algebra-tutor", "--json"])
    assert deployed.exit_code == 0, deployed.output
    assert json.loads(deployed.output) | {"target": ""} == {
        "adapter": "algebra-tutor", "version": "v1", "engine": "embedded", "target": "", "adapters": [],
        "changed": False, "message": "the embedded engine loads adapters from the registry on first use; nothing to roll out",
    }
    missing = CliRunner().invoke(app, ["adapters", "deploy", "nope"])
    assert missing.exit_code == 2 and "NOT_FOUND" in missing.output


def test_sync_copies_listed_adapters_from_an_object_store(settings, tmp_path):
    # A memory:// fsspec store behaves like an object store (not a local filesystem).
    settings.store = f"memory://tutorforge-sync-{tmp_path.name}"
    _register(settings, "algebra-tutor", times=2, tmp=tmp_path)
    _register(settings, "physics-tutor", tmp=tmp_path)
    target = tmp_path / "adapters"
    copied = sync_adapters(settings, "algebra-tutor=/adapters/algebra-tutor/v1,physics-tutor=/adapters/physics-tutor/v1",
                           target)
    assert copied == [target / "algebra-tutor" / "v1", target / "physics-tutor" / "v1"]
    assert (target / "algebra-tutor" / "v1" / "adapter_model.safetensors").stat().st_size > 0
    assert not (target / "algebra-tutor" / "v2").exists()
