"""DatasetService over real gRPC on a loopback port: builds, versions, export, delete, dry runs, bad inputs."""

from __future__ import annotations

import json

import grpc
import pytest
from dataset_helpers import dialogue, fixture_bytes, jsonl, store_snapshot

from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, jobs_pb2

FILES = ("dialogues.jsonl", "openai.json", "instructions.jsonl", "scenarios.jsonl")


def file_source(name: str, content: bytes | None = None) -> datasets_pb2.DatasetSource:
    return datasets_pb2.DatasetSource(file=datasets_pb2.RecordFile(filename=name, content=content if content is not None else fixture_bytes(name)))


def run_build(stub, name, sources, **options) -> tuple[common_pb2.Job, list[common_pb2.JobEvent]]:
    job = stub.CreateDataset(
        datasets_pb2.CreateDatasetRequest(name=name, sources=sources, options=datasets_pb2.BuildOptions(**options))
    ).job
    events = [r.event for r in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=300)]
    return stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job, events


@pytest.fixture
def service(serve):
    running, channel = serve("datasets")
    return running, datasets_pb2_grpc.DatasetServiceStub(channel)


def test_build_get_export_list_delete(service):
    running, stub = service
    job, events = run_build(stub, "starter", [file_source(name) for name in FILES], validation_fraction=0.2, seed=3,
                            decontaminate_against=[datasets_pb2.RecordFile(filename="evaluation.jsonl", content=fixture_bytes("evaluation.jsonl"))])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED
    assert any(e.message.startswith("reading dialogues.jsonl") for e in events)
    assert all(a.progress <= b.progress for a, b in zip(events, events[1:])) and events[-1].progress == 1.0
    version = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="starter")).dataset
    assert version.version == job.result and version.content_hash.startswith(version.version)
    stats = version.stats
    # 16 records in the fixtures, one overlaps the evaluation set.
    assert (stats.records, stats.train_records, stats.validation_records) == (15, 12, 3)
    assert stats.records_per_subject["math"] == 5 and sum(b.count for b in stats.token_length_histogram) == 15
    assert 0.8 < stats.question_rate <= 1.0
    assert [(d.source, d.index) for d in version.manifest.dropped] == [("dialogues.jsonl", 4)]
    assert "overlaps the evaluation set" in version.manifest.dropped[0].reason
    assert dict(version.manifest.dropped_by_reason) == {"contaminated": 1}
    assert [s.format for s in version.manifest.sources] == [
        datasets_pb2.RECORD_FORMAT_CHATML, datasets_pb2.RECORD_FORMAT_OPENAI,
        datasets_pb2.RECORD_FORMAT_INSTRUCTION, datasets_pb2.RECORD_FORMAT_SCENARIO,
    ]
    assert version.manifest.tokenizer == "SmolLM2-135M-Instruct"

    # The storage contract other services read.
    repository = DatasetRepository(running.runtime.store)
    assert repository.get("starter").version == version.version
    train = repository.records("starter", "", "train")
    assert len(train) == 12 and set(train[0]) >= {"id", "conversations", "metadata", "source"}

    lines = [r.line for r in stub.ExportDataset(datasets_pb2.ExportDatasetRequest(name="starter"))]
    assert len(lines) == 15 and all("conversations" in json.loads(line) for line in lines)
    openai = [json.loads(r.line) for r in stub.ExportDataset(datasets_pb2.ExportDatasetRequest(
        name="starter", split=datasets_pb2.DATASET_SPLIT_VALIDATION, format=datasets_pb2.EXPORT_FORMAT_OPENAI))]
    assert len(openai) == 3 and all(list(item) == ["messages"] for item in openai)

    listed = stub.ListDatasets(datasets_pb2.ListDatasetsRequest()).datasets
    assert [(d.name, d.version) for d in listed] == [("starter", version.version)]
    deleted = stub.DeleteDataset(datasets_pb2.DeleteDatasetRequest(name="starter"))
    assert list(deleted.deleted_versions) == [version.version]
    with pytest.raises(grpc.RpcError) as error:
        stub.GetDataset(datasets_pb2.GetDatasetRequest(name="starter"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_rebuild_gives_the_same_version_and_other_parameters_a_new_one(service):
    _, stub = service
    sources = [file_source("dialogues.jsonl"), file_source("scenarios.jsonl")]
    first, _ = run_build(stub, "same", sources, seed=1)
    second, _ = run_build(stub, "same", sources, seed=1)
    assert first.result == second.result and first.state == common_pb2.JOB_STATE_SUCCEEDED
    third, _ = run_build(stub, "same", sources, seed=2)
    assert third.result != first.result
    versions = {d.version for d in stub.ListDatasets(datasets_pb2.ListDatasetsRequest()).datasets}
    assert versions == {first.result, third.result}
    # Deleting one version keeps the other.
    stub.DeleteDataset(datasets_pb2.DeleteDatasetRequest(name="same", version=third.result))
    assert stub.GetDataset(datasets_pb2.GetDatasetRequest(name="same")).dataset.version == first.result


def test_invalid_records_are_dropped_and_named(service):
    _, stub = service
    records = [
        dialogue("How do plants drink water?", "Where do you think the water enters a plant?", subject="science"),
        dialogue("hello", "What?", "unfinished"),                                                     # ends with user
        {"conversations": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}]},  # wrong roles
        dialogue("Tell me everything " * 200, "Where should we start?"),  # too long
        dialogue("How do plants drink water?", "Where do you think the water enters a plant?", subject="science"),  # duplicate
    ]
    content = jsonl(records) + b'{"conversations": [\n'
    job, _ = run_build(stub, "mixed", [file_source("mixed.jsonl", content)], max_tokens=512)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    dropped = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="mixed")).dataset.manifest.dropped
    reasons = {d.index: d.reason for d in dropped}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert reasons[1] == "the conversation must end with an assistant turn"
    assert "turn 0 is 'assistant' where 'user' was expected" in reasons[2]
    assert reasons[3].startswith("too long: ") and reasons[3].endswith("tokens (limit 512)")
    assert reasons[4] == "exact duplicate of mixed.jsonl[0]"
    assert reasons[5].startswith("malformed JSON")


def test_strict_mode_fails_the_job_and_stores_nothing(service):
    running, stub = service
    run_build(stub, "kept", [file_source("scenarios.jsonl")])
    before = store_snapshot(running.runtime.store)
    bad = jsonl([dialogue("a question here", "Why?"), dialogue("only a student turn")])
    job, events = run_build(stub, "strict", [file_source("bad.jsonl", bad)], strict=True)
    assert job.state == common_pb2.JOB_STATE_FAILED
    assert "strict mode: 1 invalid record(s), nothing stored: bad.jsonl[1]: " in job.error
    assert events[-1].state == common_pb2.JOB_STATE_FAILED
    assert store_snapshot(running.runtime.store) == before


def test_quality_filters(service):
    _, stub = service
    records = [
        dialogue("What is 6 times 7?", "The answer is 42.", subject="math"),
        dialogue("What is 6 times 8?", "It is 48, remember it.", subject="math"),
        dialogue("What is 6 times 9?", "What is 6 times 10, and how could that help?", subject="math"),
    ]
    job, _ = run_build(stub, "filtered", [file_source("q.jsonl", jsonl(records))], min_question_rate=0.5, drop_answer_revealing=True)
    version = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="filtered")).dataset
    assert version.stats.records == 1
    assert dict(version.manifest.dropped_by_reason) == {"low_question_rate": 2}
    job, _ = run_build(stub, "reveal", [file_source("q.jsonl", jsonl(records))], drop_answer_revealing=True)
    version = stub.GetDataset(datasets_pb2.GetDatasetRequest(name="reveal")).dataset
    assert dict(version.manifest.dropped_by_reason) == {"reveals_answer": 1} and version.stats.records == 2


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (datasets_pb2.CreateDatasetRequest(name="../x", sources=[file_source("dialogues.jsonl")]), grpc.StatusCode.INVALID_ARGUMENT, "dataset name '../x' is not valid"),
        (datasets_pb2.CreateDatasetRequest(name="empty"), grpc.StatusCode.INVALID_ARGUMENT, "no sources"),
        (datasets_pb2.CreateDatasetRequest(name="broken", sources=[file_source("broken.json", b'[{"conversations": [}')]), grpc.StatusCode.INVALID_ARGUMENT, "broken.json starts like a JSON array but is not valid JSON"),
        (datasets_pb2.CreateDatasetRequest(name="unknown", sources=[file_source("u.jsonl", jsonl([{"a": 1}]))]), grpc.StatusCode.INVALID_ARGUMENT, "cannot tell the format of u.jsonl"),
        (datasets_pb2.CreateDatasetRequest(name="opts", sources=[file_source("dialogues.jsonl")], options=datasets_pb2.BuildOptions(validation_fraction=1.5)), grpc.StatusCode.INVALID_ARGUMENT, "validation_fraction"),
        (datasets_pb2.CreateDatasetRequest(name="syn", sources=[datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(topic="x", num_conversations=0, num_exchanges=1))]), grpc.StatusCode.INVALID_ARGUMENT, "num_conversations"),
    ],
)
def test_bad_requests_get_clear_errors_and_store_nothing(service, request_, code, message):
    running, stub = service
    run_build(stub, "kept", [file_source("scenarios.jsonl")])
    before = store_snapshot(running.runtime.store)
    jobs_before = list(running.runtime.store.walk("jobs"))
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateDataset(request_)
    assert error.value.code() == code and message in error.value.details()
    assert store_snapshot(running.runtime.store) == before
    assert list(running.runtime.store.walk("jobs")) == jobs_before


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda s: s.GetDataset(datasets_pb2.GetDatasetRequest(name="nope")), grpc.StatusCode.NOT_FOUND),
        (lambda s: s.GetDataset(datasets_pb2.GetDatasetRequest(name="kept", version="../../etc")), grpc.StatusCode.NOT_FOUND),
        (lambda s: list(s.ExportDataset(datasets_pb2.ExportDatasetRequest(name="nope"))), grpc.StatusCode.NOT_FOUND),
        (lambda s: s.DeleteDataset(datasets_pb2.DeleteDatasetRequest(name="nope")), grpc.StatusCode.NOT_FOUND),
        (lambda s: s.DeleteDataset(datasets_pb2.DeleteDatasetRequest(name="../kept")), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda s: s.GetJob(jobs_pb2.GetJobRequest(job_id="../x")), grpc.StatusCode.NOT_FOUND),
        (lambda s: s.ListDatasets(datasets_pb2.ListDatasetsRequest(page_token="abc")), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_unknown_names_and_bad_paths(service, call, code):
    running, stub = service
    run_build(stub, "kept", [file_source("scenarios.jsonl")])
    before = store_snapshot(running.runtime.store)
    with pytest.raises(grpc.RpcError) as error:
        call(stub)
    assert error.value.code() == code
    assert store_snapshot(running.runtime.store) == before


def test_validate_records_is_a_dry_run(service):
    running, stub = service
    bad = jsonl([dialogue("a question here", "Why?"), dialogue("no tutor reply"), {"instruction": "short", "context": "c", "response": "r"}])
    result = stub.ValidateRecords(datasets_pb2.ValidateRecordsRequest(files=[
        datasets_pb2.RecordFile(filename="dialogues.jsonl", content=fixture_bytes("dialogues.jsonl")),
        datasets_pb2.RecordFile(filename="bad.jsonl", content=bad),
    ]))
    assert (result.valid, result.invalid) == (11, 2)
    assert [(i.source, i.index) for i in result.issues] == [("bad.jsonl", 1), ("bad.jsonl", 2)]
    assert "end with an assistant turn" in result.issues[0].reason
    assert result.issues[1].reason == "'conversations' must be a list of turns"
    assert list(running.runtime.store.walk("datasets")) == []


def _list_pages(stub, page_size: int, between_pages=lambda: None) -> list[list[tuple[str, str]]]:
    pages, token = [], ""
    while True:
        page = stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=page_size, page_token=token))
        pages.append([(d.name, d.version) for d in page.datasets])
        token = page.next_page_token
        if not token:
            return pages
        between_pages()


def test_paging(service):
    _, stub = service
    for name in ("a1", "a2", "a3"):
        run_build(stub, name, [file_source("scenarios.jsonl")])
    first = stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=2))
    second = stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=2, page_token=first.next_page_token))
    assert [d.name for d in first.datasets] + [d.name for d in second.datasets] == ["a1", "a2", "a3"]
    assert second.next_page_token == ""


def _store_version(repository: DatasetRepository, name: str, version: str, created_at: float) -> None:
    repository.save(DatasetInfo(name=name, version=version, content_hash=version * 8, created_at=created_at),
                    {"train": [dialogue("What is a fraction?", "What do you think a part of a whole is?")]})


def test_keyset_pages_cover_every_version_once_even_with_versions_added_between_pages(service):
    running, stub = service
    repository = DatasetRepository(running.runtime.store)
    # Names whose plain string order differs from a naive "name/version" key ("a-b" vs "a"), several
    # versions per name (listed newest first within the name).
    stored = [("a", "0a1", 100.0), ("a", "0a2", 200.0), ("a-b", "0b1", 150.0), ("b", "0c1", 50.0),
              ("b", "0c2", 60.0), ("b", "0c3", 70.0), ("c.d", "0d1", 10.0)]
    for name, version, created in stored:
        _store_version(repository, name, version, created)
    expected = [("a", "0a2"), ("a", "0a1"), ("a-b", "0b1"), ("b", "0c3"), ("b", "0c2"), ("b", "0c1"), ("c.d", "0d1")]

    for size in (1, 2, 3, 7, 50):
        pages = _list_pages(stub, size)
        assert [item for page in pages for item in page] == expected, size
        assert all(len(page) == size for page in pages[:-1])

    # Versions stored while paging: ones sorting before the current position are not shown and shift
    # nothing; none of the versions present from the start is skipped or repeated (an offset would).
    added = iter([("a", "0a3", 300.0), ("a-b", "0b0", 1.0), ("0first", "0e1", 5.0)])
    seen = [item for page in _list_pages(stub, 2, lambda: _store_version(repository, *next(added, ("zz", "0f1", 1.0))))
            for item in page]
    assert len(seen) == len(set(seen))
    assert [item for item in seen if item in expected] == expected
    # Deleting versions (given and not yet given) between pages does not move the rest either.
    now = [item for page in _list_pages(stub, 1000) for item in page]
    first = stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=3))
    stub.DeleteDataset(datasets_pb2.DeleteDatasetRequest(name="a"))
    rest = stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=3, page_token=first.next_page_token))
    assert [(d.name, d.version) for d in rest.datasets] == [item for item in now[3:] if item[0] != "a"][:3]


@pytest.mark.parametrize("token", ["abc", "3", "a,123.0a1", "../a,0000000000000001.0a", "a," + "9" * 16 + ".xyz", "é" * 80])
def test_a_page_token_that_no_page_gave_is_refused_naming_it(service, token):
    running, stub = service
    _store_version(DatasetRepository(running.runtime.store), "kept", "0a1", 1.0)
    before = store_snapshot(running.runtime.store)
    with pytest.raises(grpc.RpcError) as error:
        stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_token=token))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in error.value.details() and "next_page_token of a previous page" in error.value.details()
    assert store_snapshot(running.runtime.store) == before


def test_synthetic_source_without_an_inference_service_fails_the_job_clearly(service):
    running, stub = service
    synthetic = datasets_pb2.DatasetSource(synthetic=datasets_pb2.SyntheticSource(topic="fractions", num_conversations=1, num_exchanges=1))
    job, _ = run_build(stub, "syn", [synthetic])
    assert job.state == common_pb2.JOB_STATE_FAILED
    assert "needs the inference service" in job.error
    assert list(running.runtime.store.walk("datasets")) == []
