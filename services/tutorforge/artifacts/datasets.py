"""Dataset versions in the artifact store — the one way any service reads or writes them.

Layout: `datasets/<name>/<version>/{train.jsonl, validation.jsonl, dataset.json}`. `dataset.json` is
written last, so a version without it is an interrupted write: readers ignore it and the next save of
the same version overwrites it. A complete version is immutable."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.names import validate_name

PREFIX = "datasets"
SPLITS = ("train", "validation")
_INFO_FILE = "dataset.json"


@dataclass
class DatasetInfo:
    """One immutable dataset version: what `dataset.json` holds."""

    name: str
    version: str
    content_hash: str
    created_at: float = field(default_factory=time.time)
    description: str = ""
    # records, train_records, validation_records, turns, token_length_histogram, records_per_subject,
    # question_rate, answer_reveal_rate, mean_tokens
    stats: dict[str, Any] = field(default_factory=dict)
    # sources, dropped, dropped_by_reason, parameters, tokenizer
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InvalidArgument(f"split {split!r} is not valid: use one of {', '.join(SPLITS)}")
    return split


def _check_version(version: str) -> str:
    # Versions are hex content-hash prefixes; anything else cannot name a stored version.
    if not version or not all(c in "0123456789abcdef" for c in version) or len(version) > 64:
        raise NotFound(f"no dataset version {version!r}: versions are hex content hashes (see `tutorforge dataset show NAME`)")
    return version


class DatasetRepository:
    def __init__(self, store: ArtifactStore):
        self.store = store

    def _key(self, name: str, version: str = "", file: str = "") -> str:
        parts = [PREFIX, validate_name(name, "dataset name")]
        if version:
            parts.append(_check_version(version))
        if file:
            parts.append(file)
        return "/".join(parts)

    def versions(self, name: str) -> list[DatasetInfo]:
        """Complete versions of `name`, newest first (empty when the dataset does not exist)."""
        infos = []
        for version in self.store.list(self._key(name)):
            key = f"{PREFIX}/{name}/{version}/{_INFO_FILE}"
            if self.store.exists(key):
                infos.append(DatasetInfo.from_json(self.store.read_json(key)))
        return sorted(infos, key=lambda info: (info.created_at, info.version), reverse=True)

    def get(self, name: str, version: str = "") -> DatasetInfo:
        """A version of `name`; the newest when `version` is empty. NotFound otherwise."""
        if not version:
            versions = self.versions(name)
            if not versions:
                raise NotFound(f"no dataset {name!r}: build it with `tutorforge dataset build {name} --input FILE`")
            return versions[0]
        key = self._key(name, version, _INFO_FILE)
        if not self.store.exists(key):
            raise NotFound(f"dataset {name!r} has no version {version!r}: `tutorforge dataset show {name}` lists them")
        return DatasetInfo.from_json(self.store.read_json(key))

    def exists(self, name: str, version: str) -> bool:
        return self.store.exists(self._key(name, version, _INFO_FILE))

    def records(self, name: str, version: str, split: str) -> list[dict[str, Any]]:
        """Records of one split ("train" or "validation"); `version` empty = newest."""
        info = self.get(name, version)
        text = self.store.read_text(self._key(name, info.version, f"{_check_split(split)}.jsonl"))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def list(self) -> list[DatasetInfo]:
        """Every complete version of every dataset, by name, newest version first."""
        infos = []
        for name in self.store.list(PREFIX):
            try:
                infos.extend(self.versions(name))
            except InvalidArgument:
                continue  # not a dataset folder
        return infos

    def save(self, info: DatasetInfo, splits: dict[str, list[dict[str, Any]]]) -> DatasetInfo:
        """Store a version: the splits first, `dataset.json` last. Saving a version that already exists
        returns the stored one unchanged (same content hash = same dataset)."""
        if self.exists(info.name, info.version):
            return self.get(info.name, info.version)
        for split in SPLITS:
            lines = "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in splits.get(split, []))
            self.store.write_text(self._key(info.name, info.version, f"{split}.jsonl"), lines)
        self.store.write_json(self._key(info.name, info.version, _INFO_FILE), info.to_json())
        return info

    def delete(self, name: str, version: str = "") -> list[str]:
        """Delete one version, or every version when `version` is empty; returns the deleted versions."""
        if version:
            self.get(name, version)
            self.store.delete(self._key(name, version))
            if not self.store.list(self._key(name)):
                self.store.delete(self._key(name))
            return [version]
        versions = [info.version for info in self.versions(name)]
        if not versions:
            raise NotFound(f"no dataset {name!r} to delete: `tutorforge dataset list` shows the stored ones")
        self.store.delete(self._key(name))
        return versions
