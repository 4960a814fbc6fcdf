"""Which adapters the engine serves: the registry (and configured local roots) on one side, the engine's
loaded set on the other. Names are validated, weights are safetensors only, and an adapter only loads
on the base model it was trained for."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tutorforge.artifacts.adapters import AdapterRegistry, AdapterVersion, lora_shape, read_adapter_dir
from tutorforge.core.errors import FailedPrecondition, NotFound
from tutorforge.core.names import validate_name
from tutorforge.core.settings import Settings
from tutorforge.inference.engine import Engine
from tutorforge.inference.types import NO_ADAPTER, AdapterStatus

ROOT_VERSION = "local"


@dataclass
class ModelChoice:
    """The weights that answer one request."""

    adapter: str
    fell_back_to_base: bool = False


class AdapterManager:
    def __init__(self, registry: AdapterRegistry, engine: Engine, settings: Settings):
        self.registry = registry
        self.engine = engine
        self._roots = [Path(root) for root in settings.inference.adapter_roots]
        self._cache_dir = Path(settings.models.cache_dir) / "adapters"
        self._engine_root = PurePosixPath(settings.inference.engine_adapter_root)
        self._loaded_versions: dict[str, str] = {}
        self._lock = threading.Lock()

    def locate(self, name: str, version: str = "") -> tuple[AdapterVersion, Path]:
        """The registry entry (or local root folder) for `name`, checked against the base model."""
        validate_name(name, "adapter name")
        try:
            record = self.registry.get(name, version)
        except NotFound:
            found = self._from_roots(name) if not version or version == ROOT_VERSION else None
            if found is None:
                raise
            record, path = found
        else:
            path = self.registry.materialize(record, self._cache_dir)
        self.registry.check_base(record, self.engine.base_model)
        return record, path

    def load(self, name: str, version: str = "") -> AdapterStatus:
        record, path = self.locate(name, version)
        with self._lock:
            current = self._loaded_versions.get(name)
            if current != record.version:
                if current is not None:
                    self.engine.unload_adapter(name)
                    del self._loaded_versions[name]
                if self.engine.loads_from_registry:
                    read_adapter_dir(path)
                    self.engine.load_adapter(name, path)
                else:
                    # A remote server reads the adapter from its own mount of the registry.
                    self.engine.load_adapter(name, Path(self._engine_root / record.name / record.version))
                self._loaded_versions[name] = record.version
        return _status(record, loaded=True, registered=record.version != ROOT_VERSION)

    def unload(self, name: str) -> AdapterStatus:
        validate_name(name, "adapter name")
        with self._lock:
            if name not in self.engine.loaded_adapters():
                raise NotFound(f"adapter {name!r} is not loaded; loaded: {', '.join(self.engine.loaded_adapters()) or 'none'}")
            self.engine.unload_adapter(name)
            version = self._loaded_versions.pop(name, "")
        try:
            return _status(self.registry.get(name, version if version != ROOT_VERSION else ""), registered=True)
        except NotFound:
            return AdapterStatus(name=name, version=version, base_model=self.engine.base_model)

    def list(self) -> list[AdapterStatus]:
        loaded = set(self.engine.loaded_adapters())
        statuses = {
            record.name: _status(record, loaded=record.name in loaded, registered=True) for record in self.registry.list()
        }
        for name in loaded - statuses.keys():
            statuses[name] = AdapterStatus(
                name=name, version=self._loaded_versions.get(name, ""), base_model=self.engine.base_model, loaded=True
            )
        return [statuses[name] for name in sorted(statuses)]

    def servable(self) -> list[AdapterStatus]:
        """The adapters a request can name right now: loaded ones, and registered ones where the engine
        cannot say what it has loaded (TGI) or loads them on first use (embedded)."""
        reports = getattr(self.engine, "reports_loaded_adapters", False)
        return [status for status in self.list() if status.loaded or not reports]

    def choose(self, adapter: str, fallback_to_base: bool) -> ModelChoice:
        """Resolve a request's adapter, loading a registered one on first use (embedded engine).

        When the adapter is unavailable the request fails, unless it allowed the base model explicitly."""
        if not adapter or adapter == self.engine.base_model:
            return ModelChoice(NO_ADAPTER)
        try:
            validate_name(adapter, "adapter name")
            if not self.engine.loads_from_registry:
                # Remote engines serve registry adapters (deployed or loaded by name): check it exists.
                self.locate(adapter)
                # vLLM says what it has loaded (TGI cannot: it serves what its Deployment lists).
                if getattr(self.engine, "reports_loaded_adapters", False) and adapter not in self.engine.loaded_adapters():
                    raise FailedPrecondition(
                        f"adapter {adapter!r} is registered but not loaded on the {self.engine.kind} server: load it "
                        f"first (LoadAdapter, `tutorforge adapters load {adapter}`), or allow fallback_to_base"
                    )
            elif adapter not in self.engine.loaded_adapters():
                self.load(adapter)
            return ModelChoice(adapter)
        except (NotFound, FailedPrecondition):
            if fallback_to_base:
                return ModelChoice(NO_ADAPTER, fell_back_to_base=True)
            raise

    def _from_roots(self, name: str) -> tuple[AdapterVersion, Path] | None:
        for root in self._roots:
            folder = root / name
            if (folder / "adapter_config.json").is_file():
                config = read_adapter_dir(folder)
                base = str(config.get("base_model_name_or_path") or self.engine.base_model)
                # Training records the base as a local folder; its last component names the model.
                base_name = base.rstrip("/").split("/")[-1]
                record = AdapterVersion(
                    name=name,
                    version=ROOT_VERSION,
                    base_model=self.engine.base_model if base_name.lower() == self.engine.base_model.lower() else base_name,
                    created_at=(folder / "adapter_model.safetensors").stat().st_mtime,
                    files=sorted(p.name for p in folder.iterdir() if p.is_file()),
                    **lora_shape(config),
                    lineage={"path": str(folder)},
                )
                return record, folder
        return None


def _status(record: AdapterVersion, loaded: bool = False, registered: bool = False) -> AdapterStatus:
    metadata = dict(record.metadata)
    for key in ("dataset", "dataset_version", "metrics", "job_id"):
        if key in record.lineage and key not in metadata:
            metadata[key] = str(record.lineage[key])
    return AdapterStatus(
        name=record.name,
        version=record.version,
        base_model=record.base_model,
        loaded=loaded,
        registered=registered,
        rank=record.rank,
        target_modules=list(record.target_modules),
        metadata=metadata,
        files=list(record.files),
        created_at=record.created_at,
    )
