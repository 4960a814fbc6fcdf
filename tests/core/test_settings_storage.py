"""Settings (env + YAML), the artifact store's atomic writes, name validation, and the job manager."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import Cancelled, FailedPrecondition, InvalidArgument, NotFound
from tutorforge.core.jobs import JobManager, JobState
from tutorforge.core.names import validate_name
from tutorforge.core.settings import Settings


def test_settings_defaults_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.retrieval.backend == "edge"
    assert defaults.inference.engine == "embedded"
    assert defaults.address_of("retrieval") == "127.0.0.1:50051"

    config = tmp_path / "tutorforge.yaml"
    config.write_text("store: s3://bucket/prefix\nretrieval:\n  backend: server\n  default_limit: 5\n")
    monkeypatch.setenv("TUTORFORGE_CONFIG", str(config))
    monkeypatch.setenv("TUTORFORGE_RETRIEVAL__DEFAULT_LIMIT", "7")
    monkeypatch.setenv("TUTORFORGE_ADDRESSES__INFERENCE", "tutorforge-inference:50051")
    monkeypatch.setenv("TUTORFORGE_SERVER__API_TOKEN", "s3cret")
    settings = Settings()
    assert settings.store_url == "s3://bucket/prefix"
    assert settings.retrieval.backend == "server"
    assert settings.retrieval.default_limit == 7  # env wins over the file
    assert settings.address_of("inference") == "tutorforge-inference:50051"
    assert settings.server.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUTORFORGE_INFERENCE__ENGINE", "magic")
    with pytest.raises(ValueError, match="engine"):
        Settings()


def test_store_round_trip_and_listing(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    store.write_json("datasets/a/v1/dataset.json", {"x": 1})
    store.write_text("datasets/a/v1/train.jsonl", "{}\n")
    assert store.read_json("datasets/a/v1/dataset.json") == {"x": 1}
    assert store.list("datasets/a") == ["v1"]
    assert sorted(store.walk("datasets")) == ["datasets/a/v1/dataset.json", "datasets/a/v1/train.jsonl"]
    store.delete("datasets/a")
    assert not store.exists("datasets/a/v1/dataset.json")
    with pytest.raises(NotFound):
        store.read_bytes("datasets/a/v1/dataset.json")


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "", "/"])
def test_store_rejects_escaping_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidArgument):
        ArtifactStore(str(tmp_path)).write_text(key, "x")


def test_store_writes_are_atomic(tmp_path: Path) -> None:
    """A reader polling the file while a writer replaces it never sees a partial value."""
    store = ArtifactStore(str(tmp_path))
    big_a, big_b = b"a" * 2_000_000, b"b" * 2_000_000
    store.write_bytes("blob", big_a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def read() -> None:
        while not stop.is_set():
            data = store.read_bytes("blob")
            seen.add(data[:1] + data[-1:] + str(len(data)).encode())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(30):
        store.write_bytes("blob", big_b if i % 2 else big_a)
    stop.set()
    reader.join()
    assert seen <= {b"aa2000000", b"bb2000000"}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_store_works_over_fsspec_urls() -> None:
    store = ArtifactStore("memory://tutorforge-test")
    store.write_json("jobs/x/job.json", {"ok": True})
    assert store.read_json("jobs/x/job.json") == {"ok": True}
    assert store.list("jobs") == ["x"]


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", "-lead", "x" * 65, "a..b"])
def test_names_are_validated(name: str) -> None:
    with pytest.raises(InvalidArgument, match="adapter name"):
        validate_name(name, "adapter name")


def test_job_lifecycle_events_and_watch(tmp_path: Path) -> None:
    manager = JobManager(ArtifactStore(str(tmp_path)), "dataset")
    record = manager.create(labels={"dataset": "algebra"})
    gate = threading.Event()

    def work(reporter) -> str:  # noqa: ANN001
        for step in range(1, 4):
            gate.wait(5)
            reporter.progress(f"step {step}", step=step, total_steps=3, metrics={"records": step * 10})
        return "algebra@abc123"

    manager.start(record.id, work)
    gate.set()
    events = list(manager.watch(record.id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state == JobState.SUCCEEDED
    assert [e.step for e in events if e.message.startswith("step")] == [1, 2, 3]
    final = manager.get(record.id)
    assert final.result == "algebra@abc123" and final.metrics["records"] == 30 and final.progress == 1.0
    # A watcher that arrives late replays history from any point.
    assert [e.sequence for e in manager.watch(record.id, after_sequence=3)] == [e.sequence for e in events[3:]]
    # Records are durable: a new manager over the same store sees the same job.
    assert JobManager(ArtifactStore(str(tmp_path)), "dataset").get(record.id).state == JobState.SUCCEEDED


def test_job_cancel_failure_and_recovery(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    manager = JobManager(store, "training")
    started = threading.Event()

    def slow(reporter) -> str:  # noqa: ANN001
        started.set()
        while True:
            reporter.check_cancelled()
            threading.Event().wait(0.05)

    job = manager.create()
    manager.start(job.id, slow)
    started.wait(5)
    manager.request_cancel(job.id)
    assert manager.wait(job.id, 10).state == JobState.CANCELLED
    with pytest.raises(FailedPrecondition, match="already ended"):
        manager.request_cancel(job.id)

    def broken(reporter) -> str:  # noqa: ANN001
        raise InvalidArgument("learning_rate must be positive")

    failing = manager.create()
    manager.start(failing.id, broken)
    assert manager.wait(failing.id, 10).error == "learning_rate must be positive"

    # A process that dies leaves its job RUNNING; its lease expires since nobody renews it.
    dead = JobManager(store, "training", lease_seconds=0.2)
    orphan = dead.create()
    dead.update(orphan.id, state=JobState.RUNNING)
    dead.stop()
    time.sleep(0.5)
    restarted = JobManager(store, "training")
    assert restarted.recover_interrupted("resume it with `tutorforge jobs resume ID`") == [orphan.id]
    assert "resume it" in restarted.get(orphan.id).error
    with pytest.raises(NotFound):
        manager.get("../../etc")
    assert Cancelled("x").code.name == "CANCELLED"


def test_stopping_a_manager_ends_its_running_jobs_before_the_server_closes_channels(tmp_path: Path) -> None:
    manager = JobManager(ArtifactStore(str(tmp_path)), "dataset")
    started = threading.Event()

    def endless(reporter) -> str:  # noqa: ANN001
        started.set()
        while True:
            reporter.check_cancelled()
            threading.Event().wait(0.05)

    jobs = [manager.create() for _ in range(2)]
    for job in jobs:
        manager.start(job.id, endless)
    started.wait(5)
    manager.stop(timeout=10)
    assert [manager.get(job.id).state for job in jobs] == [JobState.CANCELLED] * 2
    manager.stop(timeout=1)  # nothing left to stop
