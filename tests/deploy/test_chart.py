"""The Helm chart, validated offline: helm lint --strict, every profile rendered and validated against the
Kubernetes 1.33 schemas (strict) and the vendored KubeRay CRD schema, the settings it passes checked
against the real Settings model, the template logic (toggles, probes, security context, network flows)
and a checkov policy scan."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from tooling import missing_tool
import yaml
from deploy_helpers import (
    CHART,
    KUBERNETES_VERSION,
    NAMESPACE,
    PROFILES,
    RELEASE,
    REPO,
    TEST_QDRANT_KEY,
    TEST_TOKEN,
    apply_json_patch,
    find,
    helm_template,
    pod_specs,
)
from tutorforge.core.settings import Settings

SERVICES = ("retrieval", "datasets", "training", "optimization", "inference")
GRPC_NAMES = {
    "retrieval": "tutorforge.v1.RetrievalService",
    "datasets": "tutorforge.v1.DatasetService",
    "training": "tutorforge.v1.TrainingService",
    "optimization": "tutorforge.v1.OptimizationService",
    "inference": "tutorforge.v1.InferenceService",
}
CASES = [(), *[(profile,) for profile in PROFILES]]
CASE_IDS = ["default", *PROFILES]
FULLNAME = f"{RELEASE}-tutorforge"


def test_profiles_cover_the_documented_variants():
    assert {"cpu", "gpu", "tgi", "vllm", "external-qdrant", "object-store"} <= set(PROFILES)


@pytest.mark.parametrize("profiles", CASES, ids=CASE_IDS)
def test_helm_lint_strict(helm, profiles):
    command = [str(helm), "lint", "--strict", str(CHART), "--set", f"apiToken.value={TEST_TOKEN}",
               "--set", f"qdrant.apiKey.value={TEST_QDRANT_KEY}"]
    for profile in profiles:
        command += ["-f", str(CHART / "profiles" / f"{profile}.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- schemas ---------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD structural schema as `--strict` validation: unknown fields are errors, not pruned."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def raycluster_validator() -> jsonschema.Draft7Validator:
    vendored = json.loads((Path(__file__).parent / "crds" / "ray.io_rayclusters.v1.json").read_text())
    return jsonschema.Draft7Validator(_strict(vendored["openAPIV3Schema"]))


def _validate(doc: dict[str, Any], raycluster_validator: jsonschema.Draft7Validator) -> None:
    if doc["apiVersion"] == "ray.io/v1":
        assert doc["kind"] == "RayCluster"
        errors = sorted(raycluster_validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("profiles", CASES, ids=CASE_IDS)
def test_rendered_manifests_are_valid(render, profiles, raycluster_validator):
    docs = render(*profiles)
    assert docs
    for doc in docs:
        _validate(doc, raycluster_validator)


def test_validation_rejects_unknown_fields(render, raycluster_validator):
    docs = render()
    deployment = find(docs, "Deployment", f"{FULLNAME}-retrieval")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["servce"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment, raycluster_validator)
    ray = find(docs, "RayCluster")[0]
    ray["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(AssertionError, match="maxReplica"):
        _validate(ray, raycluster_validator)
    ray = find(docs, "RayCluster")[0]
    ray["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    with pytest.raises(AssertionError, match="is not of type 'string'"):
        _validate(ray, raycluster_validator)


# --- settings --------------------------------------------------------------------------------------------


def _settings_env(docs: list[dict[str, Any]], service: str) -> dict[str, str]:
    """The TUTORFORGE_* environment a service's container gets (ConfigMap + literal env; secrets as markers)."""
    container = find(docs, "Deployment", f"{FULLNAME}-{service}")[0]["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])[0]["data"])
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", f"<secret {variable.get('valueFrom', {}).get('secretKeyRef', {}).get('name')}>")
    return env


def _field_exists(path: list[str]) -> bool:
    model: Any = Settings
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return True


@pytest.mark.parametrize("profiles", CASES, ids=CASE_IDS)
def test_every_setting_the_chart_passes_is_a_real_settings_field(render, profiles):
    docs = render(*profiles)
    for service in SERVICES:
        for name in _settings_env(docs, service):
            if name.startswith("TUTORFORGE_"):
                path = name.removeprefix("TUTORFORGE_").lower().split("__")
                assert _field_exists(path), f"{name} is not a field of tutorforge.core.settings.Settings"


def _settings(docs: list[dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in _settings_env(docs, service).items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_settings_of_the_default_install(render, monkeypatch):
    settings = _settings(render(), "inference", monkeypatch)
    assert settings.store_url == "/data/store"
    assert settings.address_of("retrieval") == f"{FULLNAME}-retrieval:50051"
    assert settings.address_of("datasets") == f"{FULLNAME}-datasets:50051"
    assert settings.retrieval.backend == "server"
    assert settings.retrieval.qdrant_url == f"http://{FULLNAME}-qdrant:6333"
    assert settings.inference.engine == "embedded"
    assert settings.training.ray_address == f"ray://{FULLNAME}-ray-head-svc:10001"
    assert settings.server.http_port == 8000
    assert settings.server.api_token is not None  # from the Secret
    assert str(settings.models.cache_dir) == "/opt/tutorforge/models"


@pytest.mark.parametrize(
    ("profile", "engine", "url"),
    [("tgi", "tgi", f"http://{FULLNAME}-tgi:8080"), ("vllm", "openai", f"http://{FULLNAME}-vllm:8000")],
)
def test_inference_points_at_the_serving_engine(render, monkeypatch, profile, engine, url):
    docs = render(profile)
    settings = _settings(docs, "inference", monkeypatch)
    assert (settings.inference.engine, settings.inference.engine_url) == (engine, url)
    service = find(docs, "Service", url.split("//")[1].split(":")[0])[0]
    assert service["spec"]["ports"][0]["port"] == int(url.split(":")[2].split("/")[0])


def test_cpu_profile_runs_embedded_engines(render, monkeypatch):
    docs = render("cpu")
    settings = _settings(docs, "retrieval", monkeypatch)
    assert settings.retrieval.backend == "edge" and str(settings.retrieval.edge_path) == "/data/qdrant-edge"
    assert settings.training.ray_address == ""  # local Ray in the training pod
    assert settings.inference.engine == "embedded"
    assert not find(docs, "StatefulSet") and not find(docs, "RayCluster")
    assert not find(docs, "PodDisruptionBudget")


def test_external_qdrant_and_object_store(render, monkeypatch):
    docs = render("external-qdrant")
    settings = _settings(docs, "retrieval", monkeypatch)
    assert settings.retrieval.qdrant_url == "https://qdrant.example.internal:6333"
    assert not find(docs, "StatefulSet")
    container = find(docs, "Deployment", f"{FULLNAME}-retrieval")[0]["spec"]["template"]["spec"]["containers"][0]
    key = next(v for v in container["env"] if v["name"] == "TUTORFORGE_RETRIEVAL__QDRANT_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "qdrant-api-key", "key": "api-key"}

    docs = render("object-store")
    settings = _settings(docs, "training", monkeypatch)
    assert settings.store_url == "s3://tutorforge-artifacts/prod"
    assert not find(docs, "PersistentVolumeClaim")
    for doc in docs:
        for pod in pod_specs(doc):
            for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
                assert all(m["mountPath"] != "/data" for m in container.get("volumeMounts", []))
    # TGI cannot read s3://: an init container copies the listed adapters into the pod.
    tgi = find(docs, "Deployment", f"{FULLNAME}-tgi")[0]["spec"]["template"]["spec"]
    init = {c["name"]: c for c in tgi["initContainers"]}
    assert init["adapters"]["command"] == ["python", "-m", "tutorforge.deploy.rollout", "sync", "/adapters"]
    assert {"secretRef": {"name": "tutorforge-s3"}} in init["adapters"]["envFrom"]


def test_api_token_secret_stable_explicit_or_existing(helm, render):
    # Never generated at render time: two renders give the same Secret; without a value the render fails.
    first, second = (helm_template(helm) for _ in range(2))
    secret = find([d for d in yaml.safe_load_all(first) if d], "Secret", f"{FULLNAME}-api-token")[0]
    assert first == second and base64.b64decode(secret["data"]["token"]).decode() == TEST_TOKEN
    refused = helm_template(helm, check=False, apiToken__value="")
    assert "apiToken.value is required" in refused and "openssl rand" in refused
    docs = render(apiToken__scoped={"chat": "chat-secret", "author": "", "admin": "admin-secret"})
    secret = find(docs, "Secret", f"{FULLNAME}-api-token")[0]["data"]
    assert sorted(secret) == ["admin", "chat", "token"]
    env = {e["name"]: e for e in find(docs, "Deployment", f"{FULLNAME}-inference")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TUTORFORGE_SERVER__TOKENS__CHAT"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-api-token", "key": "chat", "optional": False}
    assert "TUTORFORGE_SERVER__TOKENS__AUTHOR" not in env
    assert "TUTORFORGE_SERVER__TOKENS__ADMIN" in env
    docs = render(apiToken__existingSecret="my-token", apiToken__existingSecretKey="value")
    assert not find(docs, "Secret", f"{FULLNAME}-api-token")
    env = find(docs, "Deployment", f"{FULLNAME}-datasets")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(v for v in env if v["name"] == "TUTORFORGE_SERVER__API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "my-token", "key": "value"}
    docs = render(apiToken__enabled=False)
    container = find(docs, "Deployment", f"{FULLNAME}-datasets")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container and not find(docs, "Secret", f"{FULLNAME}-api-token")


def _env_of(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    container = find(docs, kind, name)[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def test_qdrant_api_key_from_a_stable_secret(helm, render, monkeypatch):
    # The chart's own Qdrant always gets a key: from a Secret that two renders give identically, never
    # generated; Qdrant requires it and retrieval (only retrieval) sends it.
    first, second = (helm_template(helm) for _ in range(2))
    assert first == second
    docs = [d for d in yaml.safe_load_all(first) if d]
    secret = find(docs, "Secret", f"{FULLNAME}-qdrant-api-key")[0]
    assert base64.b64decode(secret["data"]["api-key"]).decode() == TEST_QDRANT_KEY
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    reference = {"secretKeyRef": {"name": f"{FULLNAME}-qdrant-api-key", "key": "api-key"}}
    assert _env_of(docs, "StatefulSet", f"{FULLNAME}-qdrant")["QDRANT__SERVICE__API_KEY"]["valueFrom"] == reference
    assert _env_of(docs, "Deployment", f"{FULLNAME}-retrieval")["TUTORFORGE_RETRIEVAL__QDRANT_API_KEY"]["valueFrom"] == reference
    for service in ("datasets", "training", "optimization", "inference"):
        assert "TUTORFORGE_RETRIEVAL__QDRANT_API_KEY" not in _env_of(docs, "Deployment", f"{FULLNAME}-{service}")
    # Retrieval's settings, with the Secret's value in the variable as the kubelet puts it, carry the key
    # (ServerChunkStore.connect hands it to the Qdrant client).
    for name, value in _settings_env(docs, "retrieval").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUTORFORGE_RETRIEVAL__QDRANT_API_KEY", base64.b64decode(secret["data"]["api-key"]).decode())
    settings = Settings()
    assert settings.retrieval.backend == "server" and settings.retrieval.qdrant_api_key.get_secret_value() == TEST_QDRANT_KEY

    refused = helm_template(helm, check=False, qdrant__apiKey__value="")
    assert "qdrant.apiKey.value is required" in refused and "openssl rand" in refused
    docs = render(qdrant__apiKey__value="", qdrant__apiKey__existingSecret="my-qdrant", qdrant__apiKey__existingSecretKey="k")
    assert not find(docs, "Secret", "my-qdrant") and not find(docs, "Secret", f"{FULLNAME}-qdrant-api-key")
    reference = {"secretKeyRef": {"name": "my-qdrant", "key": "k"}}
    assert _env_of(docs, "StatefulSet", f"{FULLNAME}-qdrant")["QDRANT__SERVICE__API_KEY"]["valueFrom"] == reference
    assert _env_of(docs, "Deployment", f"{FULLNAME}-retrieval")["TUTORFORGE_RETRIEVAL__QDRANT_API_KEY"]["valueFrom"] == reference
    # Opting out, or Qdrant's engine inside the retrieval pod: no key anywhere.
    for values in ({"qdrant__apiKey__enabled": False}, {"qdrant__mode": "embedded", "qdrant__apiKey__value": ""}):
        docs = render(**values)
        assert not find(docs, "Secret", f"{FULLNAME}-qdrant-api-key")
        assert "TUTORFORGE_RETRIEVAL__QDRANT_API_KEY" not in _env_of(docs, "Deployment", f"{FULLNAME}-retrieval")


def test_tls_from_a_secret(render):
    docs = render(tls__existingSecret="tutorforge-tls", tls__requireClientCert=True)
    for service in SERVICES:
        pod = find(docs, "Deployment", f"{FULLNAME}-{service}")[0]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TUTORFORGE_TLS__CERT_FILE"] == "/etc/tutorforge/tls/tls.crt"
        assert env["TUTORFORGE_TLS__CA_FILE"] == "/etc/tutorforge/tls/ca.crt"
        assert env["TUTORFORGE_TLS__REQUIRE_CLIENT_CERT"] == "true"
        assert {"name": "tls", "mountPath": "/etc/tutorforge/tls", "readOnly": True} in container["volumeMounts"]
        assert {"name": "tls", "secret": {"secretName": "tutorforge-tls", "defaultMode": 0o440}} in pod["volumes"]
        # Kubernetes' gRPC probes cannot do TLS: TCP checks instead.
        assert all(container[f"{p}Probe"].get("tcpSocket") == {"port": 50051} for p in ("startup", "liveness", "readiness"))
    plain = find(render(), "Deployment", f"{FULLNAME}-training")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "grpc" in plain["livenessProbe"] and not any(e["name"].startswith("TUTORFORGE_TLS") for e in plain["env"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"store.type": "objectStore"}, "store.objectStore.url is required"),
        ({"qdrant.mode": "external"}, "qdrant.externalUrl is required"),
        ({"qdrant.mode": "embedded", "services.retrieval.replicas": 2}, "set services.retrieval.replicas=1"),
        ({"serving.engine": "triton"}, "serving.engine must be embedded, tgi or vllm"),
        ({"serving.engine": "tgi", "serving.adapters": [{"name": "a"}]}, "serving.adapters[].version is required"),
    ],
)
def test_bad_values_fail_with_a_message_that_says_what_to_fix(helm, values, message):
    output = helm_template(helm, check=False, **{k.replace(".", "__"): v for k, v in values.items()})
    assert message in output


# --- template logic --------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_disabling_a_service_removes_its_resources(render, service):
    docs = render(**{f"services__{service}__enabled": False})
    name = f"{FULLNAME}-{service}"
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert not find(docs, kind, name), f"{kind} {name} still rendered"
    settings = find(docs, "ConfigMap", f"{FULLNAME}-settings")[0]["data"]
    assert f"TUTORFORGE_ADDRESSES__{service.upper()}" not in settings
    remaining = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in find(docs, "Deployment")}
    assert remaining == set(SERVICES) - {service}


def test_ingress_routes_the_console_and_openai_api_to_the_http_port(render, raycluster_validator):
    assert not find(render(), "Ingress")
    docs = render(ingress__enabled=True, ingress__host="tutor.example.org", ingress__className="nginx")
    (ingress,) = find(docs, "Ingress")
    _validate(ingress, raycluster_validator)
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "tutor.example.org" and ingress["spec"]["ingressClassName"] == "nginx"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = find(docs, "Service", backend["name"])[0]
    http = next(p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"])
    assert http["port"] == 8000
    # The default-deny network policy lets the ingress controller's namespace reach that port, and only it.
    policy = find(docs, "NetworkPolicy", f"{FULLNAME}-inference")[0]
    controller = [
        rule for rule in policy["spec"]["ingress"]
        if rule["from"][0].get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "ingress-nginx"
    ]
    assert [p["port"] for p in controller[0]["ports"]] == [8000]
    assert not find(render(ingress__enabled=True, services__inference__enabled=False), "Ingress")


def test_toggles_of_the_dependencies(render):
    docs = render(ray__enabled=False, qdrant__mode="embedded", networkPolicy__enabled=False,
                  podDisruptionBudget__enabled=False)
    assert not find(docs, "RayCluster") and not find(docs, "StatefulSet")
    assert not find(docs, "NetworkPolicy") and not find(docs, "PodDisruptionBudget")
    docs = render(store__pvc__existingClaim="shared-nfs")
    assert not find(docs, "PersistentVolumeClaim")
    volume = next(v for v in find(docs, "Deployment")[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "store")
    assert volume["persistentVolumeClaim"]["claimName"] == "shared-nfs"


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"]["containers"] + pod["spec"].get("initContainers", [])


@pytest.mark.parametrize("profiles", CASES, ids=CASE_IDS)
def test_every_pod_is_restricted_and_probed(render, profiles):
    docs = render(*profiles)
    pods = [(doc, pod) for doc in docs for pod in pod_specs(doc)]
    assert len(pods) >= 5
    for doc, pod in pods:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounted_token = spec.get("automountServiceAccountToken")
        assert mounted_token is False or doc["metadata"]["name"] == f"{FULLNAME}-inference", where
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for container in _containers(pod):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["runAsNonRoot"] is True, where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            # Whatever must be writable is a volume.
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, where
        for container in spec["containers"]:
            assert "livenessProbe" in container and "readinessProbe" in container, f"{where}/{container['name']}"
            if container.get("command") == ["tutorforge", "serve"]:
                service = container["args"][0]
                assert container["args"] == [service, "--host", "0.0.0.0", "--port", "50051"]
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert container[probe]["grpc"] == {"port": 50051, "service": GRPC_NAMES[service]}, where
                assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/var/lib/tutorforge",
                                                                              "/var/cache/tutorforge"}


def test_only_the_tgi_inference_pods_may_patch_the_tgi_deployment(render):
    docs = render("tgi")
    role = find(docs, "Role")[0]
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                              "resourceNames": [f"{FULLNAME}-tgi"], "verbs": ["get", "patch"]}]
    inference = find(docs, "Deployment", f"{FULLNAME}-inference")[0]["spec"]["template"]["spec"]
    assert inference["serviceAccountName"] == f"{FULLNAME}-adapter-rollout"
    assert not find(render(), "Role") and not find(render("vllm"), "Role")


def test_serving_engines(render):
    tgi = find(render("tgi"), "Deployment", f"{FULLNAME}-tgi")[0]["spec"]["template"]["spec"]
    container = tgi["containers"][0]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["LORA_ADAPTERS"] == "algebra-tutor=/adapters/algebra-tutor/v2,physics-tutor=/adapters/physics-tutor/v1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--model-id=/models/smollm2-135m-instruct" in container["args"]
    adapters_mount = next(m for m in container["volumeMounts"] if m["name"] == "adapters")
    assert adapters_mount == {"name": "adapters", "mountPath": "/adapters", "subPath": "store/adapters", "readOnly": True}
    assert tgi["initContainers"][0]["command"][:2] == ["cp", "-R"]  # the base model comes from the image
    assert tgi["tolerations"][0]["key"] == "nvidia.com/gpu"

    vllm = find(render("vllm"), "Deployment", f"{FULLNAME}-vllm")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"--enable-lora", "--served-model-name=SmolLM2-135M-Instruct"} <= set(vllm["args"])
    assert vllm["args"][vllm["args"].index("--lora-modules") + 1] == "algebra-tutor=/adapters/algebra-tutor/v1"
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in vllm["env"]
    assert not find(render(), "Deployment", f"{FULLNAME}-tgi")


def test_raycluster_groups_and_gpu_scheduling(render):
    ray = find(render("gpu"), "RayCluster")[0]["spec"]
    groups = {g["groupName"]: g for g in ray["workerGroupSpecs"]}
    assert set(groups) == {"gpu"}
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["containers"][0]["image"].endswith(":0.1.0-gpu")
    assert groups["gpu"]["rayStartParams"] == {"num-gpus": "1"}
    default = find(render(), "RayCluster")[0]["spec"]
    assert [g["groupName"] for g in default["workerGroupSpecs"]] == ["cpu"]
    head = default["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} == {6379, 8265, 10001}
    # Ray pods read the same settings and store as the services.
    assert {"configMapRef": {"name": f"{FULLNAME}-settings"}} in head["envFrom"]
    assert any(m["mountPath"] == "/data" for m in head["volumeMounts"])


# --- network policies ------------------------------------------------------------------------------------


def _labels_of(docs: list[dict[str, Any]], component: str) -> dict[str, str]:
    for doc in docs:
        for pod in pod_specs(doc):
            if pod["metadata"]["labels"].get("app.kubernetes.io/component") == component:
                return pod["metadata"]["labels"]
    raise AssertionError(f"no pod of component {component}")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_allows(peer: dict[str, Any], source: tuple[str, dict[str, str]]) -> bool:
    namespace, labels = source
    if "ipBlock" in peer:
        return False  # pod-to-pod flows only
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != NAMESPACE:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _port_allowed(rule: dict[str, Any], port: int) -> bool:
    return "ports" not in rule or any(p["port"] == port for p in rule["ports"])


def allowed(docs: list[dict[str, Any]], source: tuple[str, dict[str, str]], target: dict[str, str], port: int) -> bool:
    """Kubernetes semantics: a flow passes if the source's egress and the target's ingress both allow it."""
    policies = find(docs, "NetworkPolicy")

    def permits(direction: str, selected: dict[str, str], peer_side: str, peer: tuple[str, dict[str, str]]) -> bool:
        relevant = [p for p in policies if _selects(p["spec"]["podSelector"], selected)
                    and direction.capitalize() in p["spec"]["policyTypes"]]
        if not relevant:
            return True
        return any(_port_allowed(rule, port) and any(_peer_allows(x, peer) for x in rule.get(peer_side, []))
                   for policy in relevant for rule in policy["spec"].get(direction) or [])

    egress_ok = source[0] != NAMESPACE or permits("egress", source[1], "to", (NAMESPACE, target))
    return egress_ok and permits("ingress", target, "from", source)


@pytest.mark.parametrize("profiles", [(), ("tgi",), ("vllm",)], ids=["default", "tgi", "vllm"])
def test_network_policies_allow_only_the_needed_flows(render, profiles):
    docs = render(*profiles)
    engine = {(): None, ("tgi",): ("tgi", 8080), ("vllm",): ("vllm", 8000)}[profiles]
    pods = {c: _labels_of(docs, c) for c in (*SERVICES, "qdrant", "ray")}
    if engine:
        pods[engine[0]] = _labels_of(docs, engine[0])
    internal = {c: (NAMESPACE, labels) for c, labels in pods.items()}
    ray_head = dict(pods["ray"], **{"tutorforge.dev/ray-node": "ray-head"})
    must = [
        ("inference", "retrieval", 50051), ("datasets", "retrieval", 50051), ("datasets", "inference", 50051),
        ("optimization", "inference", 50051), ("optimization", "datasets", 50051), ("retrieval", "qdrant", 6333),
    ]
    for source, target, port in must:
        assert allowed(docs, internal[source], pods[target], port), f"{source} -> {target}:{port} blocked"
    assert allowed(docs, internal["training"], ray_head, 10001)
    chatbot = ("chatbot", {"app": "chatbot"})
    assert allowed(docs, chatbot, pods["inference"], 50051) and allowed(docs, chatbot, pods["inference"], 8000)
    must_not = [
        (internal["retrieval"], pods["inference"], 50051), (internal["optimization"], pods["retrieval"], 50051),
        (internal["inference"], pods["qdrant"], 6333), (internal["training"], pods["inference"], 50051),
        (internal["inference"], pods["datasets"], 50051), (chatbot, pods["retrieval"], 50051),
        (chatbot, pods["qdrant"], 6333), (("other", {}), pods["inference"], 50051),
        (internal["datasets"], ray_head, 10001), (internal["inference"], pods["retrieval"], 6333),
    ]
    for source, target, port in must_not:
        assert not allowed(docs, source, target, port), f"{source} -> {target['app.kubernetes.io/component']}:{port} allowed"
    if engine:
        name, port = engine
        assert allowed(docs, internal["inference"], pods[name], port)
        assert not allowed(docs, internal["retrieval"], pods[name], port)
        assert not allowed(docs, chatbot, pods[name], port)
    # Every pod of the release is under a default-deny policy.
    deny = find(docs, "NetworkPolicy", f"{FULLNAME}-default-deny")[0]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    assert all(_selects(deny["podSelector"], labels) for labels in pods.values())


# --- policy scan -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov() -> Path:
    binary = REPO / "tools" / "checkov" / "bin" / "checkov"
    if not binary.exists():
        result = subprocess.run(["bash", str(REPO / "scripts" / "get-k8s-tools.sh"), "--with-checkov"],
                                capture_output=True, text=True, check=False)
        if not binary.exists():
            missing_tool(f"checkov is not in tools/checkov and could not be installed: {result.stderr[-500:]}")
    return binary


def _scan(checkov: Path, folder: Path, *options: str) -> dict[str, Any]:
    options = options or ("--config-file", str(CHART / ".checkov.yaml"))
    result = subprocess.run([str(checkov), "-d", str(folder), "--framework", "kubernetes", "-o", "json", *options],
                            capture_output=True, text=True, check=False)
    reports = json.loads(result.stdout)
    (report,) = reports if isinstance(reports, list) else [reports]
    return report


def test_checkov_finds_nothing_unexplained(helm, checkov, tmp_path):
    for profiles, name in zip(CASES, CASE_IDS):
        (tmp_path / f"{name}.yaml").write_text(helm_template(helm, *profiles))
    report = _scan(checkov, tmp_path)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 1000
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == {"CKV_K8S_38"}  # the annotated TGI-rollout service account, nothing else


def test_pinning_images_by_digest_satisfies_the_digest_check(helm, checkov, tmp_path):
    digest = "sha256:" + "ab" * 32
    values = {f"{part}__digest": digest for part in ("image", "qdrant__image", "serving__tgi__image")}
    (tmp_path / "pinned.yaml").write_text(helm_template(helm, "tgi", **values))
    report = _scan(checkov, tmp_path, "--check", "CKV_K8S_43")
    assert report["summary"]["failed"] == 0 and report["summary"]["passed"] > 0



# --- skaffold --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["", "cpu", "gpu"])
def test_skaffold_config_deploys_this_chart(helm, profile, raycluster_validator):
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4beta") and config["kind"] == "Config"
    for entry in config.get("profiles", []):
        if entry["name"] == profile:
            config = apply_json_patch(config, entry["patches"])
    (artifact,) = config["build"]["artifacts"]
    assert (REPO / artifact["docker"]["dockerfile"]).is_file()
    assert artifact["docker"]["buildArgs"]["VARIANT"] == ("gpu" if profile == "gpu" else "cpu")
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    image = artifact["image"]
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    assert release["setValueTemplates"]["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"
    # Render what skaffold would install and check the forwarded ports exist on the rendered Services.
    command = [str(helm), "template", release["name"], str(CHART), "--namespace", release["namespace"],
               "--set", "image.repository=localhost/tutorforge", "--set", "image.tag=dev"]
    for key, value in release.get("setValues", {}).items():
        command += ["--set", f"{key}={value}"]
    for values_file in release.get("valuesFiles", []):
        command += ["-f", str(REPO / values_file)]
    docs = [d for d in yaml.safe_load_all(subprocess.run(command, capture_output=True, text=True, check=True).stdout) if d]
    for doc in docs:
        _validate(doc, raycluster_validator)
    forwarded = {(f["resourceName"], f["port"]) for f in config["portForward"]}
    assert forwarded == {("tutorforge-inference", 50051), ("tutorforge-inference", 8000)}
    for name, port in forwarded:
        (service,) = find(docs, "Service", name)
        assert port in {p["port"] for p in service["spec"]["ports"]}
    settings = find(docs, "ConfigMap", "tutorforge-settings")[0]["data"]
    expected_engine = {"": "embedded", "cpu": "embedded", "gpu": "tgi"}[profile]
    assert settings["TUTORFORGE_INFERENCE__ENGINE"] == expected_engine
    assert bool(find(docs, "RayCluster")) == (profile != "cpu")


# --- observability ---------------------------------------------------------------------------------------


def test_every_service_exposes_metrics_with_scrape_annotations(render, monkeypatch):
    docs = render()
    for service in SERVICES:
        pod = find(docs, "Deployment", f"{FULLNAME}-{service}")[0]["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9464"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in pod["spec"]["containers"][0]["ports"]
        ports = find(docs, "Service", f"{FULLNAME}-{service}")[0]["spec"]["ports"]
        assert any(p["name"] == "metrics" and p["targetPort"] == "metrics" for p in ports)
        assert _settings(docs, service, monkeypatch).server.metrics_port == 9464
    # No ServiceMonitor unless asked for (its CRD comes with the Prometheus Operator).
    assert not find(docs, "ServiceMonitor")
    # Metrics off: no port, no annotations.
    off = render(observability__metricsPort=0)
    pod = find(off, "Deployment", f"{FULLNAME}-inference")[0]["spec"]["template"]
    assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]
    assert all(p["name"] != "metrics" for p in pod["spec"]["containers"][0]["ports"])


def test_service_monitors_select_each_service_metrics_port(render):
    docs = render(observability__serviceMonitor__enabled=True,
                  observability__serviceMonitor__labels={"release": "kube-prometheus-stack"})
    monitors = find(docs, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == sorted(f"{FULLNAME}-{s}" for s in SERVICES)
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        service = find(docs, "Service", monitor["metadata"]["name"])[0]
        assert _selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    # The rest of the release still validates strictly with the monitors on.
    for doc in docs:
        if doc["kind"] != "ServiceMonitor" and doc["apiVersion"] != "ray.io/v1":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_grafana_dashboard_is_rendered_as_a_configmap_of_real_metrics(render):
    import re

    from tutorforge.core.telemetry import metrics

    docs = render()
    config_map = find(docs, "ConfigMap", f"{FULLNAME}-dashboard")[0]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["tutorforge.json"])
    assert dashboard["uid"] == "tutorforge-overview"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[:4] == ["Serving", "Retrieval", "Jobs", "Training"]
    exported = set(re.findall(r'"(tutorforge_[a-z_]+)"', Path(metrics.__file__).read_text()))
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for q in queries for name in re.findall(r"tutorforge_[a-z_]+", q)}
    assert used and used <= exported, f"the dashboard queries metrics nobody exports: {sorted(used - exported)}"
    assert not find(render(observability__dashboard__enabled=False), "ConfigMap", f"{FULLNAME}-dashboard")


def test_network_policies_let_prometheus_scrape_and_pods_export(render):
    docs = render(observability__otlpEndpoint="http://otel-collector.monitoring:4318",
                  observability__mlflowTrackingUri="https://mlflow.example.org")
    prometheus = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
    for service in SERVICES:
        pod = _labels_of(docs, service)
        assert allowed(docs, prometheus, pod, 9464), f"prometheus cannot scrape {service}"
        assert not allowed(docs, prometheus, pod, 50051)
        assert not allowed(docs, ("chatbot", {}), pod, 9464)
        egress = [p for p in find(docs, "NetworkPolicy") if p["metadata"]["name"] == f"{FULLNAME}-{service}-observability"]
        assert {port["port"] for rule in egress[0]["spec"]["egress"] for port in rule["ports"]} == {4318, 443}
    assert not allowed(docs, prometheus, _labels_of(docs, "qdrant"), 9464)
    env = _settings_env(docs, "training")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    assert env["TUTORFORGE_EXPERIMENTS__TRACKING_URI"] == "https://mlflow.example.org"
