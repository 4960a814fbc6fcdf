"""Job leases among replicas sharing one artifact store: two (or three) JobManagers over one store folder,
each with its own owner id, as two pods would be. Exactly one replica owns and recovers each job."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.jobs import JobManager, JobState, LeaseLost

LEASE = 0.6


def _die(manager: JobManager) -> None:
    """What kill -9 does to a replica's leases: nobody renews them any more (its threads stop beating)."""
    manager.stop(timeout=1)


def _wait_ended(manager: JobManager, job_id: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not (record := manager.get(job_id)).state.terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    return record


def test_create_exclusive_has_exactly_one_winner(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    barrier = threading.Barrier(8)
    wins: list[int] = []

    def race(index: int) -> None:
        barrier.wait()
        if store.create_exclusive("jobs/x/lease-000001.json", f"{index}".encode()):
            wins.append(index)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.read_text("jobs/x/lease-000001.json") == str(wins[0])
    assert store.list("jobs/x") == ["lease-000001.json"]  # no temporary file left behind


def test_a_live_replica_keeps_its_job_and_a_second_replica_leaves_it_alone(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    first = JobManager(store, "dataset", lease_seconds=LEASE, owner="pod-a")
    second = JobManager(store, "dataset", lease_seconds=LEASE, owner="pod-b")
    release = threading.Event()

    def work(reporter) -> str:
        while not release.wait(0.05):
            reporter.progress("working")
        return "done"

    job = first.create()
    first.start(job.id, work)
    # Several lease periods pass: the heartbeat renews the lease, so the second replica never adopts it.
    second.recover_interrupted("start it again")
    time.sleep(LEASE * 4)
    assert second.owns(job.id) is False
    assert first.get(job.id).state == JobState.RUNNING
    assert store.read_json(f"jobs/dataset/{job.id}/lease-000001.json")["owner"] == "pod-a"
    release.set()
    assert first.wait(job.id, 10).state == JobState.SUCCEEDED
    time.sleep(LEASE)
    assert second.get(job.id).state == JobState.SUCCEEDED
    second.stop()


def test_two_replicas_recovering_the_same_orphans_split_them_without_overlap(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    dead = JobManager(store, "optimization", lease_seconds=LEASE, owner="pod-dead")
    orphans = [dead.create() for _ in range(12)]
    for orphan in orphans:
        dead.update(orphan.id, state=JobState.RUNNING, message="compiling")
    _die(dead)
    time.sleep(LEASE * 1.5)

    replicas = [JobManager(store, "optimization", lease_seconds=LEASE, owner=f"pod-{n}") for n in range(3)]
    barrier = threading.Barrier(len(replicas))
    adopted: dict[str, list[str]] = {}

    def recover(manager: JobManager) -> None:
        barrier.wait()
        adopted[manager.owner] = manager.recover_interrupted("start it again")

    threads = [threading.Thread(target=recover, args=(m,)) for m in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for ids in adopted.values() for job_id in ids]
    assert sorted(every) == sorted(o.id for o in orphans)  # each recovered, none twice
    for orphan in orphans:
        record = replicas[0].get(orphan.id)
        assert record.state == JobState.FAILED
        assert "stopped (crash or restart) while it was running" in record.error and "start it again" in record.error
        events = replicas[0].events(orphan.id)
        assert [e.state for e in events].count(JobState.FAILED) == 1  # one recovery wrote, once
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    for manager in replicas:
        manager.stop()


def test_a_restarted_replica_resumes_the_job_once_its_old_lease_expires(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    before = JobManager(store, "training", lease_seconds=LEASE, owner="pod-a/1")
    job = before.create(parameters={"steps": 3})
    before.update(job.id, state=JobState.RUNNING, message="step 1/3", step=1, total_steps=3)
    _die(before)

    after = JobManager(store, "training", lease_seconds=LEASE, owner="pod-a/2")
    resumed: list[str] = []

    def resume(record) -> None:
        resumed.append(record.id)
        after.requeue(record.id, "resuming from the last checkpoint")
        after.start(record.id, lambda reporter: f"ran {record.parameters['steps']} steps")

    # At start the old lease is still live: nothing is taken; the heartbeat adopts it once it expires.
    assert after.recover_interrupted("resume it", resume) == []
    deadline = time.monotonic() + LEASE * 10
    while not resumed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resumed == [job.id]
    record = _wait_ended(after, job.id)
    assert record.state == JobState.SUCCEEDED and record.result == "ran 3 steps" and record.error == ""
    states = [e.state for e in after.events(job.id)]
    assert states[-3:] == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    after.stop()


def test_a_replica_that_lost_its_lease_stops_writing_to_the_job(tmp_path: Path) -> None:
    """A replica whose heartbeat stalled past the expiry (a long pause, a partitioned node): another replica
    took the job over, so the stalled one must not overwrite the new owner's record."""
    store = ArtifactStore(str(tmp_path))
    stalled = JobManager(store, "dataset", lease_seconds=LEASE, owner="pod-stalled")
    taken = threading.Event()
    writes: list[str] = []

    def work(reporter) -> str:
        taken.wait(10)
        for _ in range(5):
            reporter.progress("stale progress")
            writes.append("written")
        return "stale result"

    job = stalled.create()
    stalled.start(job.id, work)
    stalled._closed.set()  # only its heartbeat stops (a stall); the job thread goes on
    time.sleep(LEASE * 1.5)
    other = JobManager(store, "dataset", lease_seconds=LEASE, owner="pod-b")
    assert other.recover_interrupted("start it again") == [job.id]
    taken.set()
    stalled.wait(job.id, 10)
    assert writes == []  # its first write found the newer lease and stopped
    record = other.get(job.id)
    assert record.state == JobState.FAILED and record.result == ""
    assert "stale progress" not in [e.message for e in other.events(job.id)]
    other.stop()


def test_a_job_handed_over_on_shutdown_is_resumed_by_the_next_replica_at_once(tmp_path: Path) -> None:
    """A rolling update: the stopping replica queues its job again and releases the lease, so the next
    replica takes it at its first scan instead of waiting for the lease to expire."""
    store = ArtifactStore(str(tmp_path))
    stopping = JobManager(store, "training", lease_seconds=60, owner="pod-old")
    job = stopping.create()
    stopping.update(job.id, state=JobState.RUNNING, message="step 2/4")
    stopping.hand_over(job.id, "the replica running it stopped")
    stopping.stop()
    with pytest.raises(LeaseLost):  # the old replica writes no more
        stopping.update(job.id, message="late write")

    started = time.monotonic()
    following = JobManager(store, "training", lease_seconds=60, owner="pod-new")
    resumed: list[str] = []

    def resume(record) -> None:
        resumed.append(record.state.value)
        following.requeue(record.id, "resuming")
        following.start(record.id, lambda reporter: "done")

    assert following.recover_interrupted("resume it", resume) == [job.id]
    assert time.monotonic() - started < 5 and resumed == ["QUEUED"]
    assert _wait_ended(following, job.id).state == JobState.SUCCEEDED
    following.stop()

