"""tutorforge.client as a public API, against a real server: every call below is what a user writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from pydantic import SecretStr
from tutorforge.client import (
    Connection,
    Document,
    InferenceClient,
    InvalidArgument,
    JobFailed,
    NotFound,
    Tutorforge,
    TutorforgeError,
    Unauthenticated,
    file_source,
    state_name,
)
from tutorforge.client.aio import AsyncTutorforge
from tutorforge.v1 import common_pb2
from tutorforge.v1 import retrieval_pb2 as retrieval_pb

FIXTURES = Path(__file__).resolve().parents[1] / "datasets" / "fixtures"
FRACTIONS = (
    "Fractions name parts of a whole. To add fractions with different denominators, first rewrite them "
    "with a common denominator: 1/2 + 1/3 becomes 3/6 + 2/6, which is 5/6. Adding the denominators "
    "directly gives a wrong answer because the pieces have different sizes."
)
LEAVES = (
    "Leaves capture light energy with chlorophyll. During photosynthesis the plant turns carbon dioxide "
    "and water into glucose and oxygen; the glucose stores the energy of the light."
)


def test_ingest_search_list_and_delete_documents(tf: Tutorforge) -> None:
    response = tf.retrieval.ingest([
        Document(content=FRACTIONS.encode(), filename="fractions.txt", document_id="fractions", category="math", topic="fractions"),
        Document(content=LEAVES.encode(), filename="leaves.txt", document_id="leaves", category="biology"),
    ])
    assert [r.outcome for r in response.results] == [retrieval_pb.INGEST_OUTCOME_CREATED] * 2
    # Unchanged content is not written again.
    again = tf.retrieval.ingest(Document(content=LEAVES.encode(), filename="leaves.txt", document_id="leaves", category="biology"))
    assert again.results[0].outcome == retrieval_pb.INGEST_OUTCOME_UNCHANGED

    hits = tf.retrieval.search("why can't I add the denominators?", mode="hybrid", limit=2)
    assert hits[0].document_id == "fractions" and hits[0].metadata.source == "fractions.txt"
    filtered = tf.retrieval.search("energy", mode="sparse", filters={"category": "biology"})
    assert {hit.document_id for hit in filtered} == {"leaves"}
    assert {d.document_id for d in tf.retrieval.documents(page_size=1)} == {"fractions", "leaves"}  # pages followed
    assert tf.retrieval.stats().documents == 2

    assert tf.retrieval.delete_document("leaves") > 0
    with pytest.raises(NotFound, match="leaves"):
        tf.retrieval.get_document("leaves")


def test_bad_input_raises_the_domain_error_naming_the_field(tf: Tutorforge) -> None:
    with pytest.raises(InvalidArgument, match="mode: 'fuzzy' is not one of dense, sparse, hybrid"):
        tf.retrieval.search("x", mode="fuzzy")  # refused before any call
    with pytest.raises(InvalidArgument, match="limit") as caught:
        tf.retrieval.search("x", limit=-1)  # refused by the server, mapped once to the domain error
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument, match="arguments: .*max_stepz"):
        tf.training.train("some-dataset", "some-adapter", max_stepz=3)
    with pytest.raises(NotFound, match="no dataset job 'any'"):
        tf.datasets.cancel_job("any")


def test_dataset_build_job_is_watched_and_waited_for(tf: Tutorforge, tmp_path: Path) -> None:
    job = tf.datasets.build("client-dialogues", [file_source(FIXTURES / "dialogues.jsonl")], options={"seed": 1, "validation_fraction": 0.2})
    events = list(job.watch())
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)) and events[-1].state == common_pb2.JOB_STATE_SUCCEEDED
    finished = job.wait(timeout=60)
    assert state_name(finished.state) == "succeeded" and finished.result
    dataset = tf.datasets.get("client-dialogues", finished.result)
    assert dataset.stats.records == dataset.stats.train_records + dataset.stats.validation_records > 0
    lines = list(tf.datasets.export("client-dialogues", split="validation"))
    assert len(lines) == dataset.stats.validation_records and "conversations" in json.loads(lines[0])
    assert "client-dialogues" in {d.name for d in tf.datasets.list()}


def test_a_failed_job_raises_job_failed_with_its_record(tf: Tutorforge, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": [{"role": "user", "content": "only a question"}]}\n')
    job = tf.datasets.build("client-strict", [file_source(bad)], options={"strict": True})
    with pytest.raises(JobFailed) as caught:
        job.wait(timeout=60)
    assert caught.value.job.state == common_pb2.JOB_STATE_FAILED and caught.value.job.error
    assert job.wait(check=False).state == common_pb2.JOB_STATE_FAILED
    with pytest.raises(NotFound):
        tf.datasets.get("client-strict")  # nothing stored


def test_deadline_per_kind_of_call(server) -> None:
    # 32 new tokens take seconds on a CPU: the "generate" deadline of 0.2 s cuts the call.
    with Connection(server.address, deadlines={"generate": 0.2}) as connection, pytest.raises(TutorforgeError) as caught:
        InferenceClient(connection).chat("Tell me about fractions.", retrieval=False, max_tokens=32)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(ValueError, match="unknown kind"):
        Connection(server.address, deadlines={"reed": 1})


def test_chat_whole_and_streamed_with_asyncio(tf: Tutorforge, server) -> None:
    reply = tf.inference.chat("What is 1/2 + 1/3?", retrieval=False, max_tokens=6)
    assert reply.message.role == "assistant" and reply.message.content and reply.summary.usage.completion_tokens <= 6

    async def stream() -> list[str]:
        async with AsyncTutorforge(server.address) as atf:
            kinds = [event.WhichOneof("event") async for event in atf.inference.chat_stream("What is 1/2 + 1/3?", retrieval=False, max_tokens=4)]
            whole = await atf.inference.chat([("user", "Hi")], retrieval=False, max_tokens=2)
            assert whole.summary.usage.completion_tokens <= 2
            return kinds

    kinds = asyncio.run(stream())
    assert kinds[-1] == "summary" and "token" in kinds


def test_async_job_wait(tf: Tutorforge, server) -> None:
    job = tf.datasets.build("client-async", [file_source(FIXTURES / "dialogues.jsonl")], options={"validation_fraction": 0.2})

    async def wait() -> tuple[common_pb2.Job, int]:
        async with AsyncTutorforge(server.address) as atf:
            seen = [event async for event in atf.datasets.watch(job.id)]
            return await atf.datasets.wait(job.id, timeout=60), len(seen)

    finished, seen = asyncio.run(wait())
    assert finished.state == common_pb2.JOB_STATE_SUCCEEDED and seen >= 2


def test_api_token_travels_with_every_call(serve) -> None:
    running, _ = serve("retrieval", server__api_token=SecretStr("s3cret"))
    with Tutorforge(running.address) as anonymous, pytest.raises(Unauthenticated):
        anonymous.retrieval.stats()
    with Tutorforge(running.address, token="s3cret") as tf:
        assert tf.retrieval.stats().documents == 0
