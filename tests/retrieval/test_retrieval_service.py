"""The retrieval service over real gRPC on loopback, with the real embedder and the embedded Qdrant engine."""

from __future__ import annotations

import threading

import grpc
from retrieval_helpers import FRACTIONS, LIBRARY, PHOTOSYNTHESIS, ROME, VOLCANOES, header, status_of, upload
from tutorforge.retrieval.service import point_id
from tutorforge.v1 import retrieval_pb2 as pb


def _search(stub, query: str, mode=pb.SEARCH_MODE_HYBRID, limit: int = 3, filters=(), **fields) -> list[pb.SearchHit]:
    request = pb.SearchRequest(query=query, mode=mode, limit=limit, filters=list(filters), **fields)
    return list(stub.Search(request).hits)


def _documents(stub) -> list[str]:
    return [d.document_id for d in stub.ListDocuments(pb.ListDocumentsRequest(page_size=100)).documents]


def test_ingest_search_get_list_delete_stats(library):
    stub, _ = library
    hits = _search(stub, "How do plants use sunlight and carbon dioxide to make glucose?")
    assert hits and hits[0].document_id == "photosynthesis"
    top = hits[0]
    assert top.text in PHOTOSYNTHESIS and top.metadata.category == "biology" and top.metadata.source == "photosynthesis.md"
    assert top.metadata.extra["grade"] == "6" and top.point_id

    info = stub.GetDocument(pb.GetDocumentRequest(document_id="photosynthesis", include_chunks=True))
    assert info.document.content_type == "text/markdown" and info.document.chunk_count == len(info.chunks) >= 2
    assert [c.chunk_index for c in info.chunks] == list(range(info.document.chunk_count))
    # Deterministic point ids: uuid5 of document id, version and chunk index.
    assert top.point_id == point_id("photosynthesis", info.document.version, top.chunk_index)
    # Sentence-aware: chunks start at sentence starts and end at sentence ends.
    for chunk in info.chunks:
        assert chunk.text[-1] in ".!?" or chunk.text.startswith("#"), chunk.text
    html = stub.GetDocument(pb.GetDocumentRequest(document_id="fractions", include_chunks=True))
    html_text = " ".join(c.text for c in html.chunks)
    assert "common denominator" in html_text and "<p>" not in html_text and "var x" not in html_text and "color: red" not in html_text

    assert _documents(stub) == ["fractions", "photosynthesis", "rome", "volcanoes"]
    stats = stub.GetStats(pb.GetStatsRequest())
    assert stats.documents == 4 and stats.store_backend == "edge" and stats.embedding_dimensions == 384
    assert stats.embedding_model == "all-MiniLM-L6-v2" and dict(stats.documents_per_category)["biology"] == 1
    total_chunks = stats.chunks

    deleted = stub.DeleteDocument(pb.DeleteDocumentRequest(document_id="photosynthesis"))
    assert deleted.chunks_deleted == info.document.chunk_count
    assert all(hit.document_id != "photosynthesis" for hit in _search(stub, "chlorophyll stomata glucose", limit=10))
    assert stub.GetStats(pb.GetStatsRequest()).chunks == total_chunks - deleted.chunks_deleted
    assert status_of(lambda: stub.GetDocument(pb.GetDocumentRequest(document_id="photosynthesis"))).code() == grpc.StatusCode.NOT_FOUND


def test_three_modes_rank_the_right_document(library):
    stub, _ = library
    for mode in (pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_SPARSE, pb.SEARCH_MODE_HYBRID):
        hits = _search(stub, "What comes out of an erupting volcano?", mode=mode, score_threshold=0.0)
        assert hits[0].document_id == "volcanoes", (mode, hits)
    # BM25: a rare exact term finds its chunk even when the sentence around it says little.
    assert _search(stub, "aqueducts", mode=pb.SEARCH_MODE_SPARSE)[0].document_id == "rome"
    # Dense scores are cosines; the 0.7 default threshold drops weak matches, an explicit one keeps them.
    weak = "recipe for chocolate cake"
    assert _search(stub, weak, mode=pb.SEARCH_MODE_DENSE) == []
    assert len(_search(stub, weak, mode=pb.SEARCH_MODE_DENSE, score_threshold=-1.0)) == 3
    dense = _search(stub, "Augustus first emperor", mode=pb.SEARCH_MODE_DENSE, score_threshold=0.3, limit=5)
    assert dense and all(hit.score >= 0.3 for hit in dense)
    assert [h.score for h in dense] == sorted((h.score for h in dense), reverse=True)


def test_filters_exact_any_of_range_and_document_id(library):
    stub, _ = library
    query = "what is this lesson about"

    def documents(*filters: pb.MetadataFilter) -> set[str]:
        return {hit.document_id for hit in _search(stub, query, limit=50, filters=filters)}

    assert documents(pb.MetadataFilter(field="category", equals="history")) == {"rome"}
    assert documents(pb.MetadataFilter(field="topic", any_of=pb.StringList(values=["plants", "geology"]))) == {"photosynthesis", "volcanoes"}
    assert documents(pb.MetadataFilter(field="grade", range=pb.NumericRange(gte=6, lt=8))) == {"photosynthesis", "volcanoes"}
    assert documents(pb.MetadataFilter(field="extra.grade", range=pb.NumericRange(gt=7))) == {"rome"}
    assert documents(pb.MetadataFilter(field="document_id", equals="fractions")) == {"fractions"}
    assert documents(
        pb.MetadataFilter(field="source", any_of=pb.StringList(values=["rome.txt", "volcanoes.txt"])),
        pb.MetadataFilter(field="grade", equals="8"),
    ) == {"rome"}

    listed = stub.ListDocuments(pb.ListDocumentsRequest(filters=[pb.MetadataFilter(field="grade", range=pb.NumericRange(lte=6))]))
    assert [d.document_id for d in listed.documents] == ["fractions", "photosynthesis"] and listed.total_size == 2

    for bad, named in [
        (pb.MetadataFilter(field="colour", equals="red"), "colour"),
        (pb.MetadataFilter(field="extra.colour", equals="red"), "extra.colour"),
        (pb.MetadataFilter(field="category", range=pb.NumericRange(gt=1)), "category"),
        (pb.MetadataFilter(field="category"), "category"),
    ]:
        error = status_of(lambda: _search(stub, query, filters=[bad]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and named in error.details(), error.details()
        error = status_of(lambda: stub.ListDocuments(pb.ListDocumentsRequest(filters=[bad])))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_documents_pages(library):
    stub, _ = library
    seen, token = [], ""
    while True:
        page = stub.ListDocuments(pb.ListDocumentsRequest(page_size=3, page_token=token))
        assert page.total_size == 4
        seen += [d.document_id for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["fractions", "photosynthesis", "rome", "volcanoes"]


def test_reingest_unchanged_is_a_noop_and_changes_update(library):
    stub, _ = library
    before = stub.GetDocument(pb.GetDocumentRequest(document_id="volcanoes")).document
    again = stub.IngestDocuments(iter(upload(*LIBRARY))).results
    assert [r.outcome for r in again] == [pb.INGEST_OUTCOME_UNCHANGED] * 4
    assert again[1].version == before.version and again[1].chunks_written == 0 and again[1].chunks_skipped == before.chunk_count
    assert stub.GetDocument(pb.GetDocumentRequest(document_id="volcanoes")).document.ingested_at_unix == before.ingested_at_unix

    # New metadata is a new version too (the chunks' payload changes).
    retagged = stub.IngestDocuments(iter(upload((header("volcanoes", "volcanoes.txt", "geography", "geology", grade="7"), VOLCANOES)))).results[0]
    assert retagged.outcome == pb.INGEST_OUTCOME_UPDATED and retagged.version != before.version
    hits = _search(stub, "lava and magma", filters=[pb.MetadataFilter(field="category", equals="geography")])
    assert {hit.document_id for hit in hits} == {"volcanoes"}
    assert _search(stub, "lava and magma", filters=[pb.MetadataFilter(field="category", equals="earth")]) == []


def test_changed_document_replaces_chunks_without_ever_mixing_versions(retrieval):
    stub, _ = retrieval()
    old = " ".join(f"Old fact number {i} about the water cycle is alpha." for i in range(12))
    new = " ".join(f"New fact number {i} about the water cycle is beta." for i in range(15))
    first = stub.IngestDocuments(iter(upload((header("cycle", "cycle.txt"), old)))).results[0]
    assert first.outcome == pb.INGEST_OUTCOME_CREATED and first.chunks_written >= 4

    observed: list[set[str]] = []
    stop = threading.Event()

    def searcher() -> None:
        request = pb.SearchRequest(query="fact water cycle", mode=pb.SEARCH_MODE_SPARSE, limit=100)
        # Keep searching until the replace returned and a search saw its result.
        while not (stop.is_set() and observed and observed[-1] == {"new"}) and len(observed) < 100_000:
            texts = [hit.text for hit in stub.Search(request).hits]
            observed.append({"old" if "alpha" in text else "new" if "beta" in text else "?" for text in texts})

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        second = stub.IngestDocuments(iter(upload((header("cycle", "cycle.txt"), new)))).results[0]
    finally:
        stop.set()
        thread.join()
    assert second.outcome == pb.INGEST_OUTCOME_UPDATED and second.version != first.version
    assert observed and all(len(versions) <= 1 for versions in observed), [v for v in observed if len(v) > 1][:3]
    assert observed[0] == {"old"} and observed[-1] == {"new"}
    final = stub.Search(pb.SearchRequest(query="fact water cycle", mode=pb.SEARCH_MODE_SPARSE, limit=100)).hits
    assert len(final) == second.chunks_written and all("beta" in hit.text for hit in final)
    assert stub.GetStats(pb.GetStatsRequest()).chunks == second.chunks_written


def test_duplicate_chunks_across_documents_are_reported(library):
    stub, _ = library
    copy = VOLCANOES + "\n\nA note added by a teacher: bring a notebook to the field trip on Friday."
    result = stub.IngestDocuments(iter(upload((header("volcanoes-copy", "volcanoes-copy.txt"), copy)))).results[0]
    assert result.outcome == pb.INGEST_OUTCOME_CREATED
    original = stub.GetDocument(pb.GetDocumentRequest(document_id="volcanoes", include_chunks=True)).chunks
    assert result.duplicates, result
    for duplicate in result.duplicates:
        assert duplicate.other_document_id == "volcanoes"
        assert 0 <= duplicate.other_chunk_index < len(original)
    assert len(result.duplicates) < result.chunks_written


def test_one_bad_document_does_not_fail_the_others(retrieval):
    stub, _ = retrieval()
    results = stub.IngestDocuments(
        iter(upload((header("", "notes.docx"), "binary"), (header("", "Rome Notes.txt"), ROME), (header("", "empty.md"), " \n ")))
    ).results
    assert [r.outcome for r in results] == [pb.INGEST_OUTCOME_FAILED, pb.INGEST_OUTCOME_CREATED, pb.INGEST_OUTCOME_FAILED]
    assert "content_type" in results[0].error and "no text" in results[2].error
    assert results[1].document_id == "rome-notes"
    assert _documents(stub) == ["rome-notes"]


def test_chunking_options_per_request(retrieval):
    stub, _ = retrieval()
    options = pb.IngestDocumentsRequest(options=pb.ChunkingOptions(chunk_size_tokens=128, chunk_overlap_tokens=0))
    result = stub.IngestDocuments(iter([options, *upload((header("p", "p.md"), PHOTOSYNTHESIS))])).results[0]
    small = stub.IngestDocuments(iter(upload((header("q", "q.md"), PHOTOSYNTHESIS)))).results[0]
    assert 1 <= result.chunks_written < small.chunks_written


BAD_UPLOADS = [
    (lambda: upload((header("bad", "bad.txt"), b"\xff\xfe\xfa not utf-8")), "UTF-8"),
    (lambda: upload((header("bad", "bad.md"), b""))[:1], "empty"),
    (lambda: upload((header("bad", "bad.xlsx"), "cells")), "content_type"),
    (lambda: upload((header("bad", "bad.pdf"), b"%PDF-1.4 garbage")), "PDF"),
    (lambda: upload((header("../etc", "x.txt"), "text")), "document_id"),
    (lambda: upload((header("big", "big.txt"), "word " * 400)), "max_document_bytes"),
    (lambda: upload((pb.IngestDocumentsRequest(document=pb.DocumentHeader(filename="x.txt", metadata=pb.DocumentMetadata(extra={"a b": "1"}))), "x")), "metadata.extra"),
    (lambda: [pb.IngestDocumentsRequest(content=b"orphan")], "header"),
    (lambda: [*upload((header("late", "late.txt"), "Late text.")), pb.IngestDocumentsRequest(options=pb.ChunkingOptions(chunk_size_tokens=64))], "options"),
    (lambda: [pb.IngestDocumentsRequest(options=pb.ChunkingOptions(chunk_size_tokens=4096)), *upload((header("x", "x.txt"), "Text."))], "chunk_size_tokens"),
    (lambda: [pb.IngestDocumentsRequest(options=pb.ChunkingOptions(chunk_size_tokens=64, chunk_overlap_tokens=60)), *upload((header("x", "x.txt"), "Text."))], "chunk_overlap_tokens"),
    (lambda: [], "no documents"),
]


def test_bad_input_is_rejected_and_nothing_stored_changes(library, tmp_path):
    stub, running = library
    # The service reads its settings on every call: lower the upload limit for the oversized case.
    running.runtime.settings.retrieval.max_document_bytes = 1000
    before_stats = stub.GetStats(pb.GetStatsRequest())
    before_hits = _search(stub, "emperor roads")
    before_files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "store").rglob("*") if p.is_file())

    for messages, named in BAD_UPLOADS:
        error = status_of(lambda: stub.IngestDocuments(iter(messages())))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (named, error)
        assert named in error.details(), (named, error.details())
    for request, named in [
        (pb.SearchRequest(query="  "), "query"),
        (pb.SearchRequest(query="rome", limit=-1), "limit"),
        (pb.SearchRequest(query="rome", limit=101), "limit"),
        (pb.SearchRequest(query="rome", mode=7), "mode"),
    ]:
        error = status_of(lambda: stub.Search(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and named in error.details(), (named, error.details())
    for call, code in [
        (lambda: stub.GetDocument(pb.GetDocumentRequest(document_id="missing")), grpc.StatusCode.NOT_FOUND),
        (lambda: stub.DeleteDocument(pb.DeleteDocumentRequest(document_id="missing")), grpc.StatusCode.NOT_FOUND),
        (lambda: stub.DeleteDocument(pb.DeleteDocumentRequest(document_id="../store")), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.ListDocuments(pb.ListDocumentsRequest(page_size=-1)), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        assert status_of(call).code() == code

    # Replacing a stored document with bad content fails without touching the stored version.
    error = status_of(lambda: stub.IngestDocuments(iter(upload((header("rome", "rome.txt"), b"\xff\xff")))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert stub.GetStats(pb.GetStatsRequest()) == before_stats
    assert _search(stub, "emperor roads") == before_hits
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "store").rglob("*") if p.is_file()) == before_files


def test_server_backend_through_grpc(retrieval):
    # qdrant-client's in-process mode stands in for a Qdrant server (no server binary here).
    stub, _ = retrieval(retrieval__backend="server", retrieval__qdrant_url=":memory:")
    results = stub.IngestDocuments(iter(upload(*LIBRARY[:2]))).results
    assert [r.outcome for r in results] == [pb.INGEST_OUTCOME_CREATED] * 2
    assert stub.GetStats(pb.GetStatsRequest()).store_backend == "server"
    assert _search(stub, "chlorophyll absorbs sunlight")[0].document_id == "photosynthesis"
    assert _search(stub, "magma", mode=pb.SEARCH_MODE_SPARSE)[0].document_id == "volcanoes"
    changed = stub.IngestDocuments(iter(upload((LIBRARY[1][0], VOLCANOES + " Iceland has many volcanoes.")))).results[0]
    assert changed.outcome == pb.INGEST_OUTCOME_UPDATED
    assert stub.GetStats(pb.GetStatsRequest()).chunks == sum(
        stub.GetDocument(pb.GetDocumentRequest(document_id=d)).document.chunk_count for d in ("photosynthesis", "volcanoes")
    )


def test_document_streamed_in_many_small_pieces(retrieval):
    stub, _ = retrieval()
    messages = [header("fractions", "fractions.html")]
    raw = FRACTIONS.encode()
    messages += [pb.IngestDocumentsRequest(content=raw[i : i + 7]) for i in range(0, len(raw), 7)]
    result = stub.IngestDocuments(iter(messages)).results[0]
    assert result.outcome == pb.INGEST_OUTCOME_CREATED
    assert stub.GetDocument(pb.GetDocumentRequest(document_id="fractions")).document.size_bytes == len(raw)
