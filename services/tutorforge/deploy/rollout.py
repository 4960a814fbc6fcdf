"""Serving a registry adapter on the cluster's engine: the domain logic of `tutorforge adapters deploy NAME`.

TGI loads LoRA adapters only at start (`LORA_ADAPTERS` / `--lora-adapters name=path,...`), so deploying
an adapter rewrites the TGI Deployment's adapter list and rolls its pods (a JSON patch through the
Kubernetes API, guarded by the Deployment's resourceVersion, with the `kubectl.kubernetes.io/restartedAt`
annotation `kubectl rollout restart` uses). vLLM started with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` loads adapters at run time (`POST /v1/load_lora_adapter`). The
embedded engine reads the registry itself and needs nothing.

Serving pods see the registry's `adapters/<name>/<version>` folders under ADAPTER_ROOT (the Helm chart
mounts the store volume there, or copies them with `python -m tutorforge.deploy.rollout sync`)."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tutorforge.artifacts.adapters import AdapterRegistry, AdapterVersion
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tutorforge.core.models import chat_model_name
from tutorforge.core.settings import Settings

if TYPE_CHECKING:
    import httpx
    from kubernetes.client import AppsV1Api

log = logging.getLogger(__name__)

ADAPTER_ROOT = "/adapters"
ADAPTERS_ENV = "LORA_ADAPTERS"
ADAPTERS_ARG = "--lora-adapters"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_PATCH_ATTEMPTS = 4


@dataclass
class DeployResult:
    adapter: str
    version: str
    # "tgi", "vllm" or "embedded"
    engine: str
    # namespace/deployment for TGI, the server URL for vLLM
    target: str
    # What the engine is configured to serve afterwards (TGI: its name=path entries).
    adapters: list[str] = field(default_factory=list)
    # False when the engine already served exactly this version (nothing was rolled or loaded).
    changed: bool = True
    message: str = ""


def deploy_adapter(
    name: str,
    settings: Settings,
    namespace: str = "",
    deployment: str = "",
    version: str = "",
    *,
    adapter_root: str = ADAPTER_ROOT,
    engine_url: str = "",
    apps_api: AppsV1Api | None = None,
    http_client: httpx.Client | None = None,
    wait: bool = False,
    timeout: float = 600.0,
    on_progress: Callable[[str], None] | None = None,
) -> DeployResult:
    """Make the configured engine serve adapter `name` (its latest version unless `version` is given).

    TGI: `deployment`/`namespace` default to the Service host of `settings.inference.engine_url` (the chart
    names the Deployment like its Service) and the pod's or kubeconfig's namespace. `wait` blocks until
    the rolled pods are available."""
    registry = AdapterRegistry(ArtifactStore(settings.store_url))
    record = registry.get(name, version)
    registry.check_base(record, chat_model_name(settings.models))
    engine = settings.inference.engine
    if engine == "tgi":
        return _deploy_tgi(
            record, settings, namespace, deployment, adapter_root, apps_api, wait, timeout, on_progress
        )
    if engine == "openai":
        url = engine_url or settings.inference.engine_url
        return _deploy_vllm(record, url, adapter_root, http_client)
    return DeployResult(
        adapter=record.name,
        version=record.version,
        engine="embedded",
        target=settings.address_of("inference"),
        changed=False,
        message="the embedded engine loads adapters from the registry on first use; nothing to roll out",
    )


# --- TGI: rewrite the adapter list and roll the Deployment -------------------------------------------------


def adapter_entry(record: AdapterVersion, adapter_root: str = ADAPTER_ROOT) -> str:
    """TGI's `name=path` form for one registry adapter version."""
    return f"{record.name}={adapter_root.rstrip('/')}/{record.name}/{record.version}"


def parse_adapter_list(value: str) -> dict[str, str]:
    """`a=/adapters/a/v1,hub/id` -> {"a": "a=/adapters/a/v1", "hub/id": "hub/id"} (order kept)."""
    entries: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if item:
            entries[item.split("=", 1)[0]] = item
    return entries


def _deploy_tgi(
    record: AdapterVersion,
    settings: Settings,
    namespace: str,
    deployment: str,
    adapter_root: str,
    apps_api: AppsV1Api | None,
    wait: bool,
    timeout: float,
    on_progress: Callable[[str], None] | None,
) -> DeployResult:
    from kubernetes.client.exceptions import ApiException

    host_name, host_namespace = _service_of(settings.inference.engine_url)
    deployment = deployment or host_name
    if not deployment:
        raise InvalidArgument(
            "which Deployment runs TGI? pass the deployment name (the chart's is <release>-tutorforge-tgi) "
            "or set TUTORFORGE_INFERENCE__ENGINE_URL to its Service URL"
        )
    api = apps_api or _apps_api()
    namespace = namespace or host_namespace or _current_namespace()
    target = f"{namespace}/{deployment}"
    entry = adapter_entry(record, adapter_root)

    for attempt in range(1, _PATCH_ATTEMPTS + 1):
        current = _read_deployment(api, namespace, deployment)
        plan = _plan_tgi_patch(current, record.name, entry)
        if plan is None:
            adapters = list(parse_adapter_list(_current_list(current)).values())
            return DeployResult(record.name, record.version, "tgi", target, adapters, changed=False,
                                message=f"{target} already serves {entry}; nothing rolled")
        operations, adapters = plan
        try:
            patched = api.patch_namespaced_deployment(
                deployment, namespace, operations, _content_type="application/json-patch+json"
            )
        except ApiException as error:
            # 409/422: the Deployment changed since we read it (a failed `test`); read again and retry.
            if error.status in (409, 422) and attempt < _PATCH_ATTEMPTS:
                log.info("deployment %s changed during the patch (attempt %d); retrying", target, attempt)
                continue
            raise _api_error(error, target, "patch") from error
        break
    patched_dict = api.api_client.sanitize_for_serialization(patched)
    message = f"{target} now loads {', '.join(adapters)}; pods are rolling"
    if wait:
        _wait_for_rollout(api, namespace, deployment, patched_dict["metadata"].get("generation", 0),
                          timeout, on_progress)
        message = f"{target} rolled out with {', '.join(adapters)}"
    return DeployResult(record.name, record.version, "tgi", target, adapters, changed=True, message=message)


def _plan_tgi_patch(deployment: dict[str, Any], name: str, entry: str) -> tuple[list[dict], list[str]] | None:
    """The JSON patch that sets adapter `name` to `entry` in the TGI container, or None if already set."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    index = _tgi_container_index(containers, deployment["metadata"]["name"])
    container = containers[index]
    base = f"/spec/template/spec/containers/{index}"
    entries = parse_adapter_list(_container_list(container))
    if entries.get(name) == entry:
        return None
    entries[name] = entry
    value = ",".join(entries.values())
    operations: list[dict[str, Any]] = [
        # Optimistic concurrency: the patch applies only to the version we read.
        {"op": "test", "path": "/metadata/resourceVersion", "value": deployment["metadata"]["resourceVersion"]},
    ]
    env = container.get("env")
    env_index = next((i for i, var in enumerate(env or []) if var.get("name") == ADAPTERS_ENV), None)
    arg_index = _arg_index(container.get("args") or [])
    if env_index is not None:
        operations.append({"op": "replace", "path": f"{base}/env/{env_index}",
                           "value": {"name": ADAPTERS_ENV, "value": value}})
    elif arg_index is None:
        variable = {"name": ADAPTERS_ENV, "value": value}
        operations.append({"op": "add", "path": f"{base}/env/-", "value": variable} if env is not None
                          else {"op": "add", "path": f"{base}/env", "value": [variable]})
    if arg_index is not None:
        args = container["args"]
        # TGI's command-line flag wins over the variable: keep both in step.
        if args[arg_index] == ADAPTERS_ARG:
            operations.append({"op": "replace", "path": f"{base}/args/{arg_index + 1}", "value": value})
        else:
            operations.append({"op": "replace", "path": f"{base}/args/{arg_index}",
                               "value": f"{ADAPTERS_ARG}={value}"})
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if deployment["spec"]["template"].get("metadata", {}).get("annotations") is None:
        operations.append({"op": "add", "path": "/spec/template/metadata/annotations", "value": {RESTARTED_AT: now}})
    else:
        operations.append({"op": "add", "path": "/spec/template/metadata/annotations/"
                           + RESTARTED_AT.replace("~", "~0").replace("/", "~1"), "value": now})
    return operations, list(entries.values())


def _tgi_container_index(containers: list[dict[str, Any]], deployment: str) -> int:
    for index, container in enumerate(containers):
        if any(var.get("name") == ADAPTERS_ENV for var in container.get("env") or []):
            return index
        if _arg_index(container.get("args") or []) is not None:
            return index
    for index, container in enumerate(containers):
        if container.get("name") == "tgi":
            return index
    if len(containers) == 1:
        return 0
    raise FailedPrecondition(
        f"deployment {deployment} has {len(containers)} containers and none is named tgi or sets "
        f"{ADAPTERS_ENV}/{ADAPTERS_ARG}; is it the TGI Deployment?"
    )


def _arg_index(args: list[str]) -> int | None:
    for index, arg in enumerate(args):
        if (arg == ADAPTERS_ARG and index + 1 < len(args)) or arg.startswith(ADAPTERS_ARG + "="):
            return index
    return None


def _container_list(container: dict[str, Any]) -> str:
    args = container.get("args") or []
    index = _arg_index(args)
    if index is not None:
        return args[index + 1] if args[index] == ADAPTERS_ARG else args[index].split("=", 1)[1]
    for var in container.get("env") or []:
        if var.get("name") == ADAPTERS_ENV:
            return var.get("value") or ""
    return ""


def _current_list(deployment: dict[str, Any]) -> str:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return _container_list(containers[_tgi_container_index(containers, deployment["metadata"]["name"])])


def _read_deployment(api: AppsV1Api, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.api_client.sanitize_for_serialization(api.read_namespaced_deployment(name, namespace))
    except ApiException as error:
        raise _api_error(error, f"{namespace}/{name}", "read") from error


def _wait_for_rollout(
    api: AppsV1Api,
    namespace: str,
    name: str,
    generation: int,
    timeout: float,
    on_progress: Callable[[str], None] | None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        current = _read_deployment(api, namespace, name)
        wanted = current["spec"].get("replicas", 1)
        status = current.get("status") or {}
        updated = status.get("updatedReplicas", 0)
        available = status.get("availableReplicas", 0)
        if on_progress:
            on_progress(f"{updated}/{wanted} updated, {available}/{wanted} available")
        if (status.get("observedGeneration", 0) >= generation and updated == wanted and available == wanted
                and status.get("replicas", 0) == wanted):
            return
        if time.monotonic() > deadline:
            raise Unavailable(
                f"deployment {namespace}/{name} did not finish rolling out within {timeout:.0f} s "
                f"({updated}/{wanted} updated, {available}/{wanted} available); "
                f"see `kubectl -n {namespace} rollout status deployment/{name}`"
            )
        time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))


def _api_error(error: Any, target: str, verb: str) -> Exception:
    if error.status == 404:
        return NotFound(f"deployment {target} does not exist; check the namespace and the TGI Deployment's name")
    if error.status in (401, 403):
        return FailedPrecondition(
            f"not allowed to {verb} deployment {target} ({error.reason}); the chart's adapter-rollout Role "
            "grants get/patch on it to the inference pods, or use a kubeconfig that may"
        )
    return Unavailable(f"Kubernetes API refused to {verb} deployment {target}: {error.status} {error.reason}")


def _service_of(url: str) -> tuple[str, str]:
    """('tutorforge-tgi', 'ns') from http://tutorforge-tgi.ns.svc:8080 ; ('', '') for IPs or no URL."""
    host = urlparse(url).hostname or ""
    if not host or host.replace(".", "").isdigit() or host == "localhost":
        return "", ""
    labels = host.split(".")
    namespace = labels[1] if len(labels) > 1 and labels[1] != "svc" else ""
    return labels[0], namespace


def _current_namespace() -> str:
    if _IN_CLUSTER_NAMESPACE.is_file():
        return _IN_CLUSTER_NAMESPACE.read_text().strip()
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()
        return (context or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # noqa: BLE001 - no kubeconfig: the API client will say so when it connects
        return "default"


def _apps_api() -> AppsV1Api:
    try:
        from kubernetes import client, config
    except ImportError as error:
        raise FailedPrecondition("deploying to TGI needs the Kubernetes client: pip install 'tutorforge[deploy]'") from error
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except config.ConfigException as error:
            raise FailedPrecondition(
                f"no Kubernetes credentials: run inside the cluster or set KUBECONFIG ({error})"
            ) from error
    return client.AppsV1Api()


# --- vLLM: load at run time -------------------------------------------------------------------------------


def _deploy_vllm(
    record: AdapterVersion, url: str, adapter_root: str, http_client: httpx.Client | None
) -> DeployResult:
    import httpx

    if not url:
        raise InvalidArgument("no engine URL: set TUTORFORGE_INFERENCE__ENGINE_URL to the vLLM server (http://host:8000)")
    root = url.rstrip("/").removesuffix("/v1")
    path = f"{adapter_root.rstrip('/')}/{record.name}/{record.version}"
    client = http_client or httpx.Client(timeout=120.0)
    try:
        response = _post(client, f"{root}/v1/load_lora_adapter", {"lora_name": record.name, "lora_path": path})
        replaced = False
        if response.status_code == 400 and "already" in response.text:
            # vLLM keeps one adapter per name: a new version replaces the loaded one.
            _post(client, f"{root}/v1/unload_lora_adapter", {"lora_name": record.name})
            response = _post(client, f"{root}/v1/load_lora_adapter", {"lora_name": record.name, "lora_path": path})
            replaced = True
    finally:
        if http_client is None:
            client.close()
    if response.status_code == 404:
        raise FailedPrecondition(
            f"{root} has no /v1/load_lora_adapter: start vLLM with --enable-lora and "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
        )
    if response.status_code >= 400:
        raise FailedPrecondition(f"vLLM at {root} refused to load {path}: {response.status_code} {response.text.strip()}")
    verb = "replaced the loaded version with" if replaced else "loaded"
    return DeployResult(record.name, record.version, "vllm", root, [record.name], changed=True,
                        message=f"vLLM at {root} {verb} {record.name}@{record.version} from {path}")


def _post(client: httpx.Client, url: str, body: dict[str, str]) -> httpx.Response:
    import httpx

    try:
        return client.post(url, json=body)
    except httpx.HTTPError as error:
        raise Unavailable(f"cannot reach vLLM at {url}: {error}") from error


# --- copying adapters into a serving pod (object-store artifact stores) ------------------------------------


def sync_adapters(settings: Settings, entries: str, target: Path) -> list[Path]:
    """Copy the registry adapters named in a TGI-style list (`name=/adapters/name/v2,...`) into
    `target/<name>/<version>`, for serving pods whose store is an object store (a local store is mounted
    instead). The version is taken from each entry's path."""
    registry = AdapterRegistry(ArtifactStore(settings.store_url))
    copied = []
    for name, entry in parse_adapter_list(entries).items():
        _, _, path = entry.partition("=")
        version = Path(path).name if path else ""
        copied.append(registry.materialize(registry.get(name, version), target))
    return copied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tutorforge.deploy.rollout")
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help=f"copy the adapters listed in ${ADAPTERS_ENV} from the store into a folder")
    sync.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    for folder in sync_adapters(Settings(), os.environ.get(ADAPTERS_ENV, ""), args.target):
        print(folder)


if __name__ == "__main__":
    main()
