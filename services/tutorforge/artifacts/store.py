"""The artifact store: everything durable the platform keeps, under one root that is a local folder
or any fsspec URL. Keys are '/'-separated relative paths. Writes are atomic: a reader sees the old
file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tutorforge.core.errors import InvalidArgument, NotFound


def _check_key(key: str) -> str:
    normalized = posixpath.normpath(key.strip("/"))
    if not key or normalized.startswith("..") or normalized == "." or "\\" in key or "\x00" in key:
        raise InvalidArgument(f"invalid storage key {key!r}")
    return normalized


class ArtifactStore:
    """Atomic key/value files over fsspec."""

    def __init__(self, url: str):
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> str:
        return f"{self.root}/{_check_key(key)}"

    def local_path(self, key: str) -> Path:
        """Filesystem path of a key, for libraries that need real files; only for local stores."""
        if not self.is_local:
            raise RuntimeError(f"artifact store {self.url} is not local")
        return Path(self.path(key))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        if self.is_local:
            tmp = _durable_temp(target, data)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        else:
            # Object stores publish an object only when its upload completes, which is atomic already.
            self.fs.pipe_file(target, data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist yet; False when it does. Of racing writers (threads,
        processes, replicas on one store) exactly one wins: what job leases are built on."""
        target = self.path(key)
        if self.is_local:
            tmp = _durable_temp(target, data)
            try:
                # link() fails when the name exists and publishes the complete file when it does not.
                os.link(tmp, target)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            # Conditional put (S3 If-None-Match, GCS ifGenerationMatch=0) where the backend offers it.
            self.fs.pipe_file(target, data, mode="create")
            return True
        except FileExistsError:
            return False

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError as error:
            raise NotFound(f"{key} does not exist in the artifact store") from error

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_json(self, key: str, value: Any) -> None:
        self.write_text(key, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_text(key))

    def list(self, prefix: str) -> list[str]:
        """Names directly under `prefix` (files and folders), sorted."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        names = {posixpath.basename(entry.rstrip("/")) for entry in self.fs.ls(base, detail=False)}
        return sorted(name for name in names if not name.startswith(".tmp-"))

    def walk(self, prefix: str) -> Iterator[str]:
        """Every file key under `prefix`."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return
        for path in sorted(self.fs.find(base)):
            relative = posixpath.relpath(path, self.root)
            if not posixpath.basename(relative).startswith(".tmp-"):
                yield relative

    def delete(self, key: str) -> None:
        target = self.path(key)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    def upload_dir(self, local_dir: Path, key: str) -> None:
        """Copy a local folder's files under `key`, each file written atomically; then a marker file, so
        readers can tell a complete folder from one still being copied."""
        for file in sorted(Path(local_dir).rglob("*")):
            if file.is_file():
                self.write_bytes(f"{key}/{file.relative_to(local_dir).as_posix()}", file.read_bytes())
        self.write_text(f"{key}/.complete", uuid.uuid4().hex)

    def is_complete_dir(self, key: str) -> bool:
        return self.exists(f"{key}/.complete")

    def download_dir(self, key: str, local_dir: Path) -> Path:
        local_dir.mkdir(parents=True, exist_ok=True)
        for file_key in self.walk(key):
            relative = posixpath.relpath(file_key, _check_key(key))
            target = local_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(file_key))
        return local_dir


VERSION = re.compile(r"^v(\d+)$")


def complete_versions(store: ArtifactStore, folder: str, marker: str) -> list[str]:
    """The versions (v1, v2, …) under `folder` whose `marker` file exists — written last, so a version
    without it is an interrupted write — in numeric order."""
    found = []
    for entry in store.list(folder):
        match = VERSION.match(entry)
        if match and store.exists(f"{folder}/{entry}/{marker}"):
            found.append((int(match.group(1)), entry))
    return [entry for _, entry in sorted(found)]


def next_version(store: ArtifactStore, folder: str) -> str:
    """The version after every one under `folder`, complete or not (an interrupted write's number is not
    reused)."""
    numbers = [int(m.group(1)) for entry in store.list(folder) if (m := VERSION.match(entry))]
    return f"v{max(numbers, default=0) + 1}"


def _durable_temp(target: str, data: bytes) -> str:
    """`data` written and fsynced to a temporary file beside `target` (same filesystem, so it can be
    renamed or linked into place); its path. Removed again if the write fails."""
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp
