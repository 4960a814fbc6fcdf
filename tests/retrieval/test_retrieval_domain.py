"""Domain pieces without gRPC: chunking, text extraction, and the replace protocol under failure,
for both store backends through the store interface."""

from __future__ import annotations

from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from retrieval_helpers import PHOTOSYNTHESIS, VOLCANOES

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.models import load_embedder
from tutorforge.retrieval.chunking import ChunkingOptions, chunk_text, unit_spans
from tutorforge.retrieval.documents import HTML, MARKDOWN, PDF, TEXT, DocumentMetadata, content_type_for, extract_text
from tutorforge.retrieval.edge_store import EdgeChunkStore
from tutorforge.retrieval.server_store import ServerChunkStore
from tutorforge.retrieval.service import DocumentUpload, RetrievalService
from tutorforge.samples import material_dir

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")


@pytest.fixture(scope="module")
def tokenizer():
    from tutorforge.core.settings import Settings

    return load_embedder(Settings().models).tokenizer


def test_units_split_at_sentences_and_markdown_blocks():
    text = "# Title\n\nFirst sentence. Second one? Third!\n- item one\n- item two\n\nA wrapped\nline ends here."
    units = [text[s:e] for s, e in unit_spans(text)]
    assert units == ["# Title", "First sentence.", "Second one?", "Third!", "- item one", "- item two", "A wrapped\nline ends here."]


def test_chunks_respect_size_overlap_and_sentence_boundaries(tokenizer):
    sentences = [f"Sentence number {i} talks about the ocean and its tides." for i in range(40)]
    text = " ".join(sentences)
    options = ChunkingOptions(size=64, overlap=16)
    chunks = chunk_text(text, tokenizer, options)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk.token_ids) <= 64 - 2
        assert len(tokenizer(chunk.text)["input_ids"]) <= 64  # with [CLS]/[SEP]: fits the model window
        assert chunk.text.startswith("Sentence") and chunk.text.endswith("tides.")
    for previous, current in zip(chunks, chunks[1:]):
        last_sentence = previous.text[previous.text.rindex("Sentence") :]
        assert current.text.startswith(last_sentence), "overlap carries the previous chunk's last sentence"
    covered = " ".join(chunk.text for chunk in chunks)
    assert all(sentence in covered for sentence in sentences)


def test_only_an_overlong_sentence_is_cut(tokenizer):
    run_on = "and then " * 80 + "it ended."
    chunks = chunk_text("Short start. " + run_on + " Short end.", tokenizer, ChunkingOptions(size=32, overlap=0))
    assert chunks[0].text == "Short start."
    assert chunks[-1].text.endswith("Short end.")
    assert all(len(chunk.token_ids) <= 30 for chunk in chunks)


def test_chunking_options_are_validated():
    with pytest.raises(InvalidArgument, match="chunk_size_tokens=1024 exceeds"):
        ChunkingOptions(1024, 64).validate(window=512)
    with pytest.raises(InvalidArgument, match="chunk_overlap_tokens"):
        ChunkingOptions(100, 50).validate(window=512)


def test_text_extraction_per_type():
    assert content_type_for("", "a.md") == MARKDOWN and content_type_for("", "a.HTM") == HTML
    assert content_type_for("text/plain; charset=utf-8", "x.bin") == TEXT
    pdf = (material_dir() / "history_industrial_revolution.pdf").read_bytes()
    text = extract_text(pdf, PDF, "industrial.pdf")
    assert "steam" in text.lower() and len(text) > 2000
    html = extract_text(b"<p>One.</p><script>evil()</script><p>Two &amp; three.</p>", HTML, "x.html")
    assert html == "One.\nTwo & three."
    assert extract_text("\ufeffCaf\u00e9\r\nline".encode(), TEXT, "x.txt") == "Caf\u00e9\nline"
    for data, content_type, message in [
        (b"", TEXT, "empty"),
        (b"\xc3\x28", TEXT, "UTF-8"),
        (b"<html><script>x</script></html>", HTML, "no text"),
        (b"not a pdf", PDF, "readable PDF"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            extract_text(data, content_type, "doc")


class _FailingSwitch:
    """A store that fails when the replace protocol switches versions (as a crash there would)."""

    def __init__(self, inner):
        self.inner = inner
        self.fail = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def set_state(self, where, state):
        if self.fail:
            raise ConnectionError("qdrant went away")
        self.inner.set_state(where, state)


@pytest.fixture(params=["edge", "server"])
def service(request, tmp_path: Path, settings):
    settings.retrieval.chunk_size_tokens, settings.retrieval.chunk_overlap_tokens = 48, 8
    if request.param == "edge":
        inner = EdgeChunkStore.open(tmp_path / "edge", 384)
    else:
        inner = ServerChunkStore(QdrantClient(location=":memory:"), "chunks", 384)
    store = _FailingSwitch(inner)
    service = RetrievalService(settings.retrieval, settings.models, ArtifactStore(str(tmp_path / "store")), store)
    yield service, store
    service.close()


def _cited(hits) -> list[tuple[str, int, str]]:
    return [(hit.document_id, hit.chunk_index, hit.text) for hit in hits]


def _upload(document_id: str, text: str, **extra: str) -> DocumentUpload:
    data = text.encode()
    return DocumentUpload(document_id, f"{document_id}.txt", "", DocumentMetadata(source="s", category="c", extra=extra), bytearray(data), len(data))


def test_failed_switch_keeps_the_old_version_searchable(service):
    retrieval, store = service
    [created] = retrieval.ingest([_upload("doc", VOLCANOES)])
    before = retrieval.search("magma lava eruption", limit=10, mode="sparse")
    assert before and {hit.document_id for hit in before} == {"doc"}

    store.fail = True
    with pytest.raises(Exception, match="qdrant went away|storing chunks failed"):
        retrieval.ingest([_upload("doc", PHOTOSYNTHESIS)])
    store.fail = False

    assert _cited(retrieval.search("magma lava eruption", limit=10, mode="sparse")) == _cited(before)
    assert retrieval.search("chlorophyll stomata", limit=10, mode="sparse") == []
    assert retrieval.stats().chunks == created.chunks_written
    assert retrieval.get_document("doc")[0].version == created.version

    [updated] = retrieval.ingest([_upload("doc", PHOTOSYNTHESIS)])
    assert updated.outcome == "updated"
    assert retrieval.search("magma lava eruption", limit=10, mode="sparse") == []
    hits = retrieval.search("chlorophyll stomata", limit=10, mode="sparse")
    assert hits and retrieval.stats().chunks == updated.chunks_written == retrieval.get_document("doc")[0].chunk_count


def test_domain_search_validation(service):
    retrieval, _ = service
    retrieval.ingest([_upload("doc", VOLCANOES, grade="7")])
    with pytest.raises(InvalidArgument, match="limit must be between 1 and 100, got 0"):
        retrieval.search("magma", limit=0)
    with pytest.raises(InvalidArgument, match="query is empty"):
        retrieval.search("")
    # Only stop words: nothing to match in sparse mode; hybrid falls back to the dense side.
    assert retrieval.search("the of and", mode="sparse") == []
    assert retrieval.search("the of and", mode="hybrid")


def test_documents_without_chunks_in_the_index_are_reported_when_it_opens(tmp_path: Path, settings, caplog):
    """The same artifact store served with an empty index (another edge_path, a wiped Qdrant volume): the
    documents it lists cannot be found, and the log says so, naming the index; with its own index, nothing."""
    import logging

    settings.retrieval.chunk_size_tokens, settings.retrieval.chunk_overlap_tokens = 48, 8
    artifacts = ArtifactStore(str(tmp_path / "store"))

    def opened(edge_path: Path) -> str:
        settings.retrieval.edge_path = edge_path
        service = RetrievalService(settings.retrieval, settings.models, artifacts)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tutorforge.retrieval.service"):
            service.store  # noqa: B018 - opening the index is what is checked
        if not service.catalog.all():
            service.ingest([_upload("doc", VOLCANOES)])
        service.close()
        return caplog.text

    assert opened(tmp_path / "index") == ""  # nothing stored yet
    assert opened(tmp_path / "index") == ""  # its own index: the chunks are there
    warning = opened(tmp_path / "elsewhere")
    assert "lists 1 document(s) but the chunk index" in warning and str(tmp_path / "elsewhere") in warning
