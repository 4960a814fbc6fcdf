"""The seed source: lesson cards composed into grounded multi-turn Socratic dialogues, through the dataset
service with a real retrieval service (real embedder, embedded Qdrant) on loopback. The system turns must be
exactly what the tutor chat builds at serving time, so the tests rebuild them through the chat's own
retrieval path and compare."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from dataclasses import replace

import grpc
import pytest
from dataset_helpers import jsonl, store_snapshot
from typer.testing import CliRunner

from tutorforge import samples
from tutorforge.artifacts.datasets import DatasetRepository
from tutorforge.cli import app
from tutorforge.client.retrieval import RetrievalClient
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.pedagogy import reveals_answer
from tutorforge.core.teaching import Citation, RetrievalOptions, Retriever, build_prompt, chat_retrieval
from tutorforge.datasets import seeds
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, jobs_pb2, retrieval_pb2, retrieval_pb2_grpc

SUBJECTS = {"mathematics", "physics", "chemistry", "biology", "earth_science", "history", "language_arts", "computer_science"}


def _ingest(channel: grpc.Channel, document_ids: set[str] | None = None) -> None:
    """Ingest sample material documents under their manifest metadata, as the demo does."""

    def upload():
        for document in samples.material_documents():
            if document_ids is not None and document.document_id not in document_ids:
                continue
            metadata = retrieval_pb2.DocumentMetadata(source=document.source, category=document.category,
                                                      topic=document.topic, extra=document.extra)
            yield retrieval_pb2.IngestDocumentsRequest(document=retrieval_pb2.DocumentHeader(
                document_id=document.document_id, filename=document.path.name, metadata=metadata))
            yield retrieval_pb2.IngestDocumentsRequest(content=document.path.read_bytes())

    results = retrieval_pb2_grpc.RetrievalServiceStub(channel).IngestDocuments(upload(), timeout=1200).results
    assert results and all(r.outcome == retrieval_pb2.INGEST_OUTCOME_CREATED for r in results), results


def _build(stub: datasets_pb2_grpc.DatasetServiceStub, name: str, source: datasets_pb2.SeedSource) -> datasets_pb2.DatasetVersion:
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name=name, sources=[datasets_pb2.DatasetSource(seeds=source)])).job
    list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=1800))
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.error
    return stub.GetDataset(datasets_pb2.GetDatasetRequest(name=name)).dataset


def _records(running, name: str) -> list[dict]:
    repository = DatasetRepository(running.runtime.store)
    return [record for split in ("train", "validation") for record in repository.records(name, "", split)]


def _cards(filename: str) -> dict[str, dict]:
    lines = (samples.seeds_dir() / filename).read_text(encoding="utf-8").splitlines()
    return {card["id"]: card for card in map(json.loads, lines)}


def _tie_orders(citations: list[Citation], wider: list[Citation]) -> list[list[Citation]]:
    """Every list the search could have returned: the engine ranks equal scores (common in hybrid RRF) in
    no fixed order, also at the cut-off, so any hits of a wider search with the same scores in the same
    places (tags renumbered) are the same answer."""
    scores = [c.score for c in citations]
    return [
        [replace(c, tag=f"[{i}]") for i, c in enumerate(order, start=1)]
        for order in itertools.permutations(wider, len(citations))
        if [c.score for c in order] == scores
    ]


def _assert_serving_system_turns(records: list[dict], running) -> None:
    """Each system turn is what the chat builds for the record's first student turn: its retrieval
    defaults (chat_retrieval with the server's settings), its prompt."""
    retriever = Retriever(RetrievalClient(running.runtime.connection("retrieval")))
    options = chat_retrieval(RetrievalOptions(enabled=True), running.runtime.settings.inference)
    for record in records:
        first = [{"role": "user", "content": record["conversations"][1]["content"]}]
        citations = retriever.search(first[0]["content"], options)
        wider = retriever.search(first[0]["content"], replace(options, limit=len(citations) + 3))
        assert record["conversations"][0] in [build_prompt(first, order)[0] for order in _tie_orders(citations, wider)]
        assert (record["source"]["document_id"], record["source"]["chunk_index"]) in {(c.document_id, c.chunk_index) for c in wider}


def _assert_accounting(version: datasets_pb2.DatasetVersion) -> None:
    """Per source: read = kept + dropped, and the reasons add up to the dropped records listed."""
    listed = Counter((d.source, d.reason) for d in version.manifest.dropped)
    for summary in version.manifest.sources:
        assert summary.records_read == summary.records_kept + summary.records_dropped, summary
        assert sum(summary.dropped_by_reason.values()) == summary.records_dropped
        assert sum(n for (source, _), n in listed.items() if source == summary.source) == summary.records_dropped


def test_cards_compose_into_dialogues_that_keep_the_answer_back():
    """Every bundled card, every kind: the tutor asks one question per turn, cites the passage, keeps the
    answer back, and stays within the word budget; dialogues of one card are not near duplicates."""
    kinds: Counter[str] = Counter()
    subjects = set()
    for path in seeds.bundled_seed_files():
        for card in seeds.parse_cards(path.name, path.read_bytes()):
            subjects.add(card.subject)
            for number in range(seeds.DEFAULT_DIALOGUES_PER_CARD):
                planned = seeds.plan(card, number, seed=0)
                turns = seeds.compose(card, planned, number, "[1]")
                kinds[planned.kind] += 1
                assert seeds.turn_problem(card, turns) is None, (card.id, number)
                tutor = [t["content"] for t in turns if t["role"] == "assistant"]
                assert len(tutor) == planned.exchanges and all(t.endswith("?") and t.count("?") == 1 for t in tutor)
                assert all("[1]" in t for t in tutor)
    assert subjects == SUBJECTS
    assert set(kinds) == set(seeds.KINDS)
    assert sum(kinds.values()) >= 500


_CARD = next(iter(_cards("mathematics.jsonl").values()))


@pytest.mark.parametrize(
    ("content", "per_card", "bundled", "message"),
    [
        (jsonl([{**_CARD, "hint": "x"}]), 0, False, "unknown field 'hint'"),
        (b"\n\n", 0, False, "has no cards"),
        (jsonl([{**_CARD, "questions": []}]), 0, False, ".questions must be a list"),
        (jsonl([{**_CARD, "hints": [{"says": "Fact.", "asks": "Why"}] * 2}]), 0, False, "hints[0].asks must be one question"),
        (None, 33, True, "seeds.dialogues_per_card 33 is out of range"),
        (None, -1, True, "seeds.dialogues_per_card -1 is out of range"),
        (None, 0, False, "seeds needs lesson-card files"),
    ],
    ids=["unknown-field", "empty", "no-questions", "hint-without-question", "too-many-per-card", "negative-per-card", "no-files"],
)
def test_bad_seed_input_is_refused_naming_the_field(serve, content, per_card, bundled, message):
    running, channel = serve("datasets")
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    before = store_snapshot(running.runtime.store)
    files = [datasets_pb2.RecordFile(filename="cards.jsonl", content=content)] if content is not None else []
    source = datasets_pb2.SeedSource(files=files, bundled=bundled, dialogues_per_card=per_card)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateDataset(datasets_pb2.CreateDatasetRequest(name="cards", sources=[datasets_pb2.DatasetSource(seeds=source)]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    assert store_snapshot(running.runtime.store) == before
    assert not stub.ListDatasets(datasets_pb2.ListDatasetsRequest()).datasets


def test_revealing_and_ungrounded_cards_are_dropped_with_reasons(serve):
    """One ingested document; a good card, a card whose hint states its final answer, and a card about a
    document that is not ingested. Kept dialogues carry the chat's system turn; drops are accounted."""
    running, channel = serve("datasets", "retrieval")
    _ingest(channel, {"math_fractions"})
    good = _cards("mathematics.jsonl")["fractions-add-unlike"]
    revealing = {**good, "id": "fractions-revealing",
                 "hints": [{"says": "One quarter plus one sixth makes 5/12.", "asks": "Can you see why?"}, *good["hints"][1:]]}
    elsewhere = _cards("mathematics.jsonl")["linear-two-step"]
    content = jsonl([good, revealing, elsewhere])
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    version = _build(stub, "cards", datasets_pb2.SeedSource(files=[datasets_pb2.RecordFile(filename="cards.jsonl", content=content)],
                                                             dialogues_per_card=4))

    [summary] = version.manifest.sources
    assert summary.source == "seeds:cards.jsonl" and summary.records_read == 12
    _assert_accounting(version)
    reasons = dict(summary.dropped_by_reason)
    # Plain, pressure and follow-up dialogues open on hint 0; misconception ones open on the correction.
    assert reasons.get("reveals_answer") == 3, reasons
    assert reasons.get("not_retrieved", 0) >= 1, reasons
    for dropped in version.manifest.dropped:
        if "fractions-revealing" in dropped.reason:
            assert "states the card's final answer '5/12'" in dropped.reason
        if "linear-two-step" in dropped.reason and "returned" in dropped.reason:
            assert "not the card's document 'math_linear_equations'" in dropped.reason

    records = _records(running, "cards")
    assert {r["source"]["card"] for r in records} >= {"fractions-add-unlike", "fractions-revealing"}
    assert all(r["source"]["document_id"] == "math_fractions" for r in records)
    for record in records:
        for turn in record["conversations"][1:]:
            if turn["role"] == "assistant":
                assert "5/12" not in turn["content"] and record["source"]["tag"] in turn["content"]
    _assert_serving_system_turns(records, running)


@pytest.mark.slow
def test_bundled_seeds_build_the_tutor_training_set(serve):
    """The whole sample material ingested, then the bundled lesson cards built into the tutor training set."""
    running, channel = serve("datasets", "retrieval")
    started = time.monotonic()
    _ingest(channel)
    ingested = time.monotonic()
    stub = datasets_pb2_grpc.DatasetServiceStub(channel)
    version = _build(stub, "tutor-socratic", datasets_pb2.SeedSource(bundled=True))
    built = time.monotonic()

    records = _records(running, "tutor-socratic")
    assert version.stats.records == len(records) >= 500
    assert set(version.stats.records_per_subject) == SUBJECTS
    assert {s.source for s in version.manifest.sources} == {f"seeds:{path.name}" for path in seeds.bundled_seed_files()}
    _assert_accounting(version)

    cards = {card.id: card for path in seeds.bundled_seed_files() for card in seeds.parse_cards(path.name, path.read_bytes())}
    kinds = Counter(record["metadata"]["kind"] for record in records)
    assert kinds["misconception"] > 0 and kinds["pressure"] > 0 and kinds["follow_up"] > 0
    for record in records:
        card = cards[record["source"]["card"]]
        system, *turns = record["conversations"]
        assert system["role"] == "system" and "\n[1] (source: " in system["content"]
        tutor = [turn["content"] for turn in turns if turn["role"] == "assistant"]
        assert all(text.endswith("?") for text in tutor)
        assert not any(seeds.contains_answer(text, card.answer) or reveals_answer(text) for text in tutor)
        if record["metadata"]["kind"] == "follow_up":
            assert len(tutor) >= 2
    # The chat's own retrieval path gives the same system turns (a sample: one search per record is slow).
    _assert_serving_system_turns(records[:: max(1, len(records) // 40)], running)

    tokens = [record["quality"]["tokens"] for record in records]
    print(json.dumps({
        "ingest_seconds": round(ingested - started, 1), "build_seconds": round(built - ingested, 1),
        "sources": [{"source": s.source, "read": s.records_read, "kept": s.records_kept, "dropped": s.records_dropped,
                     "reasons": dict(s.dropped_by_reason)} for s in version.manifest.sources],
        "kinds": dict(kinds), "subjects": dict(version.stats.records_per_subject),
        "mean_tokens": round(sum(tokens) / len(tokens), 1),
        "mean_faithfulness": round(sum(r["source"]["faithfulness"] for r in records) / len(records), 3),
    }, indent=1))


def test_seed_file_cards_keep_their_own_fields():
    """Hand-edited cards: the parsed card keeps every field; an unknown move field is named."""
    card = next(iter(_cards("physics.jsonl").values()))
    [parsed] = seeds.parse_cards("physics.jsonl", jsonl([card]))
    assert parsed.document_id == card["document_id"] and parsed.answer == card["answer"]
    assert len(parsed.hints) == len(card["hints"]) and parsed.correction.asks == card["misconception"]["asks"]
    bad = {**card, "confirm": {**card["confirm"], "tone": "warm"}}
    with pytest.raises(InvalidArgument, match=r"line 1\.confirm: unknown field 'tone'"):
        seeds.parse_cards("physics.jsonl", jsonl([bad]))


def test_cli_seed_options_reach_the_service(serve, tmp_path):
    """`tutorforge dataset build --seeds/--bundled-seeds`: the service's refusal, naming the field, is shown."""
    running, _ = serve("datasets")
    cards = tmp_path / "cards.jsonl"
    cards.write_bytes(jsonl([{**_CARD, "hint": "x"}]))
    runner = CliRunner()
    result = runner.invoke(app, ["dataset", "build", "cards", "--seeds", str(cards), "--address", running.address])
    assert result.exit_code != 0 and "unknown field 'hint'" in result.output, result.output
    result = runner.invoke(app, ["dataset", "build", "cards", "--bundled-seeds", "--dialogues-per-card", "40",
                                 "--address", running.address])
    assert result.exit_code != 0 and "seeds.dialogues_per_card 40 is out of range" in result.output, result.output
