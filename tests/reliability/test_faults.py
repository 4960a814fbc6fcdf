"""kill -9 of a real `tutorforge serve all` (a subprocess on loopback with its own store) in the middle of
ingest, a dataset build, a training run and an optimization run, then a restart on the same store: nothing
half-written is visible, documents are the old or the new version, an interrupted build or optimization is
marked FAILED with the reason by exactly one replica, and training continues from its last checkpoint by
itself. Short leases (2 s) so the restarted server
takes the jobs over quickly; tiny data and few steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.client import open_channel
from tutorforge.v1 import (
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    jobs_pb2,
    optimization_pb2,
    optimization_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

from tests.conftest import MODEL_CACHE, REPO
from tests.optimization.optimization_helpers import store_starter
from tests.reliability.reliability_helpers import free_port

pytestmark = pytest.mark.slow
MATERIAL = REPO / "services" / "tutorforge" / "samples" / "material"


class Server:
    """`tutorforge serve all` in its own process, restartable on the same store and port."""

    def __init__(self, root: Path, services: tuple[str, ...] = ("all",)):
        self.root = root
        self.services = services
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "TUTORFORGE_HOME": str(root),
            "TUTORFORGE_STORE": str(root / "store"),
            "TUTORFORGE_MODELS__CACHE_DIR": str(MODEL_CACHE),
            "TUTORFORGE_JOBS__LEASE_SECONDS": "2",
            "TUTORFORGE_TRAINING__NUM_WORKERS": "1",
        }

    def start(self) -> grpc.Channel:
        self.launch()
        return self.ready()

    def launch(self) -> None:
        self.log = self.root / f"server-{'-'.join(self.services)}.log"
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tutorforge", "serve", *self.services, "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def ready(self) -> grpc.Channel:
        """Wait until the launched server answers health SERVING."""
        channel = open_channel(self.address)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return channel
            except grpc.RpcError:
                time.sleep(0.5)
        raise AssertionError("the server did not become healthy")

    def kill(self) -> None:
        """kill -9 the whole process group: the server and the local Ray it started."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    yield running
    running.stop()


def _no_partial_files(store: Path) -> None:
    """A kill -9 may leave a temporary file behind, but under a name readers never list; every file they
    do see is whole."""
    view = ArtifactStore(str(store))
    for top in (p.name for p in store.iterdir() if not p.name.startswith(".tmp-")):
        for key in view.walk(top):
            assert "/.tmp-" not in key
            if key.endswith(".json"):
                json.loads(view.read_text(key))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_during_ingest_leaves_each_document_old_or_new(server: Server, tmp_path: Path) -> None:
    channel = server.start()
    doc = tmp_path / "lesson.md"
    doc.write_text((MATERIAL / min(os.listdir(MATERIAL))).read_text())
    cli = [sys.executable, "-m", "tutorforge", "ingest", "--address", server.address, "--json"]
    subprocess.run([*cli, str(doc)], env=server.env, check=True, capture_output=True, timeout=300)
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    old = stub.ListDocuments(retrieval_pb2.ListDocumentsRequest(), timeout=30).documents
    assert len(old) == 1
    old_version = old[0].version

    # Re-ingest a changed version plus every sample file; kill the server while it works.
    doc.write_text(doc.read_text() + "\n\nA new paragraph about momentum and friction.\n" * 20)
    ingest = subprocess.Popen([*cli, str(doc), str(MATERIAL)], env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)
    server.kill()
    ingest.wait(60)

    channel = server.start()
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    documents = {d.document_id: d for d in stub.ListDocuments(retrieval_pb2.ListDocumentsRequest(page_size=100), timeout=30).documents}
    lesson = stub.GetDocument(retrieval_pb2.GetDocumentRequest(document_id=old[0].document_id, include_chunks=True), timeout=30)
    new_text = sum("A new paragraph" in c.text for c in lesson.chunks)
    # The old version without the new text, or the new version with it: never a mix.
    assert (lesson.document.version == old_version and new_text == 0) or (lesson.document.version != old_version and new_text > 0)
    for info in documents.values():  # every listed document is whole: all its chunks are there
        got = stub.GetDocument(retrieval_pb2.GetDocumentRequest(document_id=info.document_id, include_chunks=True), timeout=30)
        assert len(got.chunks) == info.chunk_count > 0
    _no_partial_files(tmp_path / "store")


def test_kill_during_dataset_build_marks_it_failed_with_the_reason(server: Server) -> None:
    channel = server.start()
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    request = datasets_pb2.CreateDatasetRequest(
        name="killed-build",
        sources=[datasets_pb2.DatasetSource(seeds=datasets_pb2.SeedSource(bundled=True, dialogues_per_card=32))],
    )
    job = stub.CreateDataset(request, timeout=60).job
    _wait(lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job.state
          == common_pb2.JOB_STATE_RUNNING, 120, "the build to run")
    server.kill()

    channel = server.start()
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    record = _wait(lambda: (j := stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job).state
                   == common_pb2.JOB_STATE_FAILED and j, 60, "the restarted server to take the build over")
    assert "stopped (crash or restart) while it was running" in record.error and "dataset build" in record.error
    # No half-written version is listed.
    assert all(d.name != "killed-build" for d in stub.ListDatasets(datasets_pb2.ListDatasetsRequest(), timeout=30).datasets)
    _no_partial_files(server.root / "store")


def test_kill_during_training_resumes_from_the_last_checkpoint(server: Server) -> None:
    channel = server.start()
    # The lesson cards' dialogues cite passages of the sample material: ingest it first.
    subprocess.run([sys.executable, "-m", "tutorforge", "ingest", "--address", server.address, str(MATERIAL)],
                   env=server.env, check=True, capture_output=True, timeout=600)
    datasets = datasets_pb2_grpc.DatasetServiceStub(channel)
    request = datasets_pb2.CreateDatasetRequest(
        name="tiny", sources=[datasets_pb2.DatasetSource(seeds=datasets_pb2.SeedSource(bundled=True, dialogues_per_card=1))],
    )
    build = datasets.CreateDataset(request, timeout=60).job
    built = _wait(lambda: (j := datasets.GetJob(jobs_pb2.GetJobRequest(job_id=build.id), timeout=10).job).state
                  in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED) and j, 600, "the tiny dataset")
    assert built.state == common_pb2.JOB_STATE_SUCCEEDED, built.error
    training = training_pb2_grpc.TrainingServiceStub(channel)
    spec = training_pb2.StartTrainingRequest(dataset="tiny", adapter_name="fault-tutor")
    spec.arguments.max_steps = 6
    spec.arguments.checkpoint_steps = 2
    spec.arguments.eval_steps = 6
    spec.arguments.batch_size = 1
    spec.arguments.max_seq_length = 128
    spec.resources.num_workers = 1
    spec.resources.cpus_per_worker = 1
    job = training.StartTraining(spec, timeout=120).job

    def at_checkpoint() -> bool:
        # Past step 3 of 6: the step-2 checkpoint is written.
        record = training.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job
        assert record.state in (common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING), record.error
        return record.progress >= 0.5

    _wait(at_checkpoint, 600, "a checkpoint")
    server.kill()

    channel = server.start()
    training = training_pb2_grpc.TrainingServiceStub(channel)
    final = _wait(lambda: (j := training.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job).state
                  in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED) and j, 900, "the resumed run")
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    messages = [r.event.message for r in training.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=60)]
    assert any("resuming from the last checkpoint" in m for m in messages)
    assert any("resumed from the last checkpoint" in m for m in messages)  # steps came from a checkpoint
    _no_partial_files(server.root / "store")


def test_kill_during_optimization_fails_it_once_with_the_reason_and_saves_no_program(server: Server) -> None:
    store = server.root / "store"
    store_starter(ArtifactStore(str(store)))
    channel = server.start()
    stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
    request = optimization_pb2.StartOptimizationRequest(
        name="killed-program", dataset="starter", optimizer=optimization_pb2.OPTIMIZER_LABELED_FEW_SHOT,
        budget=optimization_pb2.OptimizerBudget(max_labeled_demos=2, max_train_examples=4, max_validation_examples=6),
        max_tokens=32, use_retrieval=False,
    )
    job = stub.StartOptimization(request, timeout=120).job

    def scoring_the_optimized_program() -> bool:
        # Compiled, scoring the result: the program is saved right after this phase.
        record = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job
        assert record.state in (common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING), (record.state, record.error)
        return record.message.startswith("optimized:")

    _wait(scoring_the_optimized_program, 600, "the optimized program's scoring")
    server.kill()
    killed_pid = server.process.pid

    # Two replicas started together on the same store race for the orphaned job: the restarted
    # `serve all` and a second optimization replica.
    other = Server(server.root, services=("optimization",))
    try:
        server.launch()
        other.launch()
        channel = server.ready()
        other.ready()
        stub = optimization_pb2_grpc.OptimizationServiceStub(channel)
        record = _wait(lambda: (j := stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job).state
                       == common_pb2.JOB_STATE_FAILED and j, 60, "a replica to take the optimization over")
        time.sleep(3 * 2)  # three lease periods: a second takeover would have happened by now
        replicas = {server.process.pid, other.process.pid}
    finally:
        other.stop()
    assert "stopped (crash or restart) while it was running" in record.error
    assert "the program or report was not saved" in record.error
    events = [r.event.message for r in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=60)]
    assert events.count("interrupted: the replica running it stopped") == 1, events
    # Exactly one takeover: the killed process's lease (epoch 1) and one new epoch, owned by a new replica.
    view = ArtifactStore(str(store))
    leases = sorted(name for name in view.list(f"jobs/optimization/{job.id}") if name.startswith("lease-"))
    assert leases == ["lease-000001.json", "lease-000002.json"], leases
    owners = [int(view.read_json(f"jobs/optimization/{job.id}/{name}")["owner"].split("/")[1]) for name in leases]
    assert owners[0] == killed_pid and owners[1] in replicas, (owners, killed_pid, replicas)
    # No half-saved program version is listed or readable.
    assert all(p.name != "killed-program" for p in stub.ListPrograms(optimization_pb2.ListProgramsRequest(), timeout=30).programs)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetProgram(optimization_pb2.GetProgramRequest(name="killed-program"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    _no_partial_files(store)
