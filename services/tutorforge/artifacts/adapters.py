"""The adapter registry in the artifact store: `adapters/<name>/<version>/` holds a LoRA adapter's
safetensors weights and config, and `adapter.json` (written last, so a version is visible only once
complete) with its base model, metadata and lineage. Training publishes here; inference loads from here."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tutorforge.artifacts.store import VERSION, ArtifactStore, complete_versions, next_version
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tutorforge.core.names import validate_name

# Only these files are copied: weights must be safetensors (never pickle), the rest is configuration.
_ALLOWED_FILES = re.compile(
    r"^(adapter_model\.safetensors|adapter_config\.json|README\.md|tokenizer\.json|tokenizer_config\.json|"
    r"special_tokens_map\.json|chat_template\.jinja|generation_config\.json)$"
)
_UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass
class AdapterVersion:
    name: str
    version: str
    base_model: str
    created_at: float
    files: list[str]
    rank: int
    alpha: float
    target_modules: list[str]
    # subject, grade_level, teaching_style, dataset_version, ...
    metadata: dict[str, str] = field(default_factory=dict)
    # dataset, hyperparameters, metrics, training job id, ...
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"adapters/{self.name}/{self.version}"


class AdapterRegistry:
    def __init__(self, store: ArtifactStore):
        self.store = store
        self._lock = threading.Lock()

    def register(
        self,
        local_dir: Path,
        name: str,
        base_model: str,
        metadata: dict[str, str] | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> AdapterVersion:
        """Copy a PEFT adapter folder into the registry as the next version of `name`."""
        validate_name(name, "adapter name")
        local_dir = Path(local_dir)
        config = read_adapter_dir(local_dir)
        files = sorted(p.name for p in local_dir.iterdir() if p.is_file() and _ALLOWED_FILES.match(p.name))
        with self._lock:
            version = next_version(self.store, f"adapters/{name}")
            record = AdapterVersion(
                name=name,
                version=version,
                base_model=base_model,
                created_at=time.time(),
                files=files,
                **lora_shape(config),
                metadata={str(k): str(v) for k, v in (metadata or {}).items()},
                lineage=dict(lineage or {}),
            )
            for file in files:
                self.store.write_bytes(f"{record.key}/{file}", (local_dir / file).read_bytes())
            self.store.write_json(f"{record.key}/adapter.json", asdict(record))
        return record

    def get(self, name: str, version: str = "") -> AdapterVersion:
        validate_name(name, "adapter name")
        if version and not VERSION.match(version):
            raise InvalidArgument(f"adapter version {version!r} is not valid: use v1, v2, ...")
        version = version or self._latest_version(name)
        key = f"adapters/{name}/{version}/adapter.json"
        if not version or not self.store.exists(key):
            raise NotFound(f"adapter {name}{'@' + version if version else ''} is not in the registry; "
                           "see `tutorforge adapters list`")
        return AdapterVersion(**self.store.read_json(key))

    def list(self, all_versions: bool = False) -> list[AdapterVersion]:
        records = []
        for name in self.store.list("adapters"):
            versions = self._versions(name)
            for version in versions if all_versions else versions[-1:]:
                records.append(self.get(name, version))
        return records

    def remove(self, name: str, version: str = "") -> list[str]:
        validate_name(name, "adapter name")
        versions = [version] if version else self._versions(name)
        if not versions or (version and version not in self._versions(name)):
            raise NotFound(f"adapter {name}{'@' + version if version else ''} is not in the registry")
        for item in versions:
            self.store.delete(f"adapters/{name}/{item}")
        if not self._versions(name):
            self.store.delete(f"adapters/{name}")
        return versions

    def record_benchmark(self, name: str, version: str, scores: dict[str, Any]) -> AdapterVersion:
        """Add a benchmark's summary to one adapter version: flattened into metadata as
        `benchmark.<score>` (and `benchmark.<score>.<part>` for nested values such as interval bounds),
        and kept as given under `lineage["benchmark"]`. A new summary replaces the previous one; the
        record is rewritten in one write, and refused input changes nothing."""
        if not version:
            raise InvalidArgument("version is required: a benchmark scores one adapter version (v1, v2, …)")
        flat = benchmark_metadata(scores)
        with self._lock:
            record = self.get(name, version)
            record.metadata = {
                **{k: v for k, v in record.metadata.items() if not k.startswith(BENCHMARK_PREFIX)},
                **flat,
            }
            record.lineage = {**record.lineage, "benchmark": {**scores, "recorded_at": time.time()}}
            self.store.write_json(f"{record.key}/adapter.json", asdict(record))
        return record

    def materialize(self, record: AdapterVersion, cache_dir: Path) -> Path:
        """A local folder with the adapter's files (the store itself when it is local)."""
        if self.store.is_local:
            return self.store.local_path(record.key)
        target = Path(cache_dir) / record.name / record.version
        if not (target / "adapter_config.json").exists():
            for file in record.files:
                target.mkdir(parents=True, exist_ok=True)
                (target / file).write_bytes(self.store.read_bytes(f"{record.key}/{file}"))
        return target

    def check_base(self, record: AdapterVersion, base_model: str) -> None:
        if record.base_model != base_model:
            raise FailedPrecondition(
                f"adapter {record.name}@{record.version} was trained for base model {record.base_model!r}, "
                f"but this server runs {base_model!r}; retrain it on {base_model!r} or serve its base model"
            )

    def _versions(self, name: str) -> list[str]:
        return complete_versions(self.store, f"adapters/{name}", "adapter.json")

    def _latest_version(self, name: str) -> str:
        versions = self._versions(name)
        return versions[-1] if versions else ""



BENCHMARK_PREFIX = "benchmark."
_SCORE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")


def benchmark_metadata(scores: dict[str, Any]) -> dict[str, str]:
    """`scores` as metadata strings: numbers (finite), short strings, or one level of named numbers
    (e.g. {"value": 0.8, "low": 0.7, "high": 0.9}); each error names the score to fix."""
    if not isinstance(scores, dict) or not scores:
        raise InvalidArgument("scores must be a non-empty mapping of score names to values")
    flat: dict[str, str] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidArgument(
                f"scores.{key}={value!r} is not valid: use a number, a string or named numbers"
            )
        if isinstance(value, str):
            if len(value) > 256:
                raise InvalidArgument(f"scores.{key} is longer than 256 characters")
            flat[BENCHMARK_PREFIX + key] = value
        elif not math.isfinite(value):
            raise InvalidArgument(f"scores.{key}={value!r} is not a finite number")
        else:
            flat[BENCHMARK_PREFIX + key] = f"{value:.6g}"

    for name, value in scores.items():
        if not isinstance(name, str) or not _SCORE_NAME.match(name):
            raise InvalidArgument(f"scores key {name!r} is not valid: use 1-48 letters, digits, '_' or '-'")
        if isinstance(value, dict):
            for part, inner in value.items():
                if not isinstance(part, str) or not _SCORE_NAME.match(part):
                    raise InvalidArgument(
                        f"scores.{name} key {part!r} is not valid: use 1-48 letters, digits, '_' or '-'"
                    )
                add(f"{name}.{part}", inner)
        else:
            add(name, value)
    return flat


def read_adapter_dir(local_dir: Path) -> dict[str, Any]:
    """The adapter_config of a PEFT LoRA folder, after checking that it is complete and safe to load:
    safetensors weights only, a LoRA config, and a weights header that holds LoRA A/B matrices."""
    local_dir = Path(local_dir)
    config_file = local_dir / "adapter_config.json"
    if not config_file.is_file():
        raise InvalidArgument(f"{local_dir} is not a PEFT adapter folder: adapter_config.json is missing")
    unsafe = sorted(p.name for p in local_dir.iterdir() if p.suffix in _UNSAFE_SUFFIXES)
    if unsafe:
        raise InvalidArgument(
            f"{local_dir} holds pickle-based weights ({', '.join(unsafe)}); save the adapter with "
            "safe_serialization=True (adapter_model.safetensors)"
        )
    weights = local_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise InvalidArgument(f"{local_dir} has no adapter_model.safetensors")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"{config_file} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidArgument(f"{config_file} does not describe a LoRA adapter (peft_type must be LORA)")
    names = list(safetensors_header(weights))
    if not any("lora_A" in n for n in names) or not any("lora_B" in n for n in names):
        raise InvalidArgument(f"{weights} holds no LoRA weights (lora_A/lora_B tensors)")
    return config


def lora_shape(config: dict[str, Any]) -> dict[str, Any]:
    """rank, alpha and target_modules of an adapter_config, as AdapterVersion holds them."""
    return {
        "rank": int(config.get("r", 0)),
        "alpha": float(config.get("lora_alpha", 0)),
        "target_modules": sorted(_as_list(config.get("target_modules"))),
    }


def safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor names → {dtype, shape, data_offsets} from a safetensors header (8-byte little-endian
    length, then JSON), read without loading any weights."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 0 < size <= 100 * 1024 * 1024:
            raise InvalidArgument(f"{path} is not a safetensors file")
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidArgument(f"{path} is not a safetensors file: {error}") from error
    if not isinstance(header, dict):
        raise InvalidArgument(f"{path} is not a safetensors file")
    header.pop("__metadata__", None)
    return header


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]
