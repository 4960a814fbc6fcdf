"""The retrieval domain: ingest documents into Qdrant, search them, and manage their records.

Plain Python (no gRPC): the servicer translates to and from protobuf. State lives in the chunk store
(Qdrant) and the artifact store (document records); this object only holds caches and locks.

A changed document replaces its old chunks atomically for searches: the new version's chunks are
written "staged" (invisible; their point ids include the version, so they never overwrite the old
ones), then the old version is retired and the new one activated, then the old points are deleted.
Searches only see "active" chunks, so they see the old version, briefly nothing, or the new
version, never a mix; and a failure before the switch leaves the old version fully searchable."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Literal

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument, TutorforgeError
from tutorforge.core.models import embedder_name, load_embedder
from tutorforge.core.names import NAME_PATTERN
from tutorforge.core.paging import keyset_page
from tutorforge.core.settings import ModelSettings, RetrievalSettings
from tutorforge.core.telemetry.metrics import INGESTED_CHUNKS, observe_search, watch_collection
from tutorforge.retrieval.chunking import Chunk, ChunkingOptions, chunk_text
from tutorforge.retrieval.documents import (
    DocumentCatalog,
    DocumentMetadata,
    DocumentRecord,
    content_type_for,
    document_id_for,
    extract_text,
)
from tutorforge.retrieval.encoding import Encoder
from tutorforge.retrieval.filters import (
    ExtraKeys,
    FieldFilter,
    as_number,
    record_matches,
    resolve,
    store_conditions,
)
from tutorforge.retrieval.store import (
    ACTIVE,
    RETIRED,
    STAGED,
    ChunkPoint,
    ChunkStore,
    Match,
    SearchMode,
    StoredChunk,
    VectorQuery,
    Where,
    open_chunk_store,
)

log = logging.getLogger(__name__)

_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tutorforge.dev/retrieval/chunk")
Outcome = Literal["created", "updated", "unchanged", "failed"]
SEARCH_MODES = ("dense", "sparse", "hybrid")
DEFAULT_PAGE_SIZE = 50


def point_id(document_id: str, version: str, chunk_index: int) -> str:
    """Deterministic: the same chunk of the same document version always has the same id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{document_id}/{version}/{chunk_index}"))


def text_hash(text: str) -> str:
    return hashlib.sha256(re.sub(r"\s+", " ", text).strip().lower().encode("utf-8")).hexdigest()[:32]


@dataclass
class DocumentUpload:
    """One uploaded document: the header's fields and the bytes received so far."""

    document_id: str = ""
    filename: str = ""
    content_type: str = ""
    metadata: DocumentMetadata = field(default_factory=DocumentMetadata)
    content: bytearray = field(default_factory=bytearray)
    # Bytes received, counted even past the size limit (content is then dropped, not buffered).
    size: int = 0

    def append(self, data: bytes, max_bytes: int) -> None:
        self.size += len(data)
        if self.size <= max_bytes:
            self.content += data
        else:
            self.content = bytearray()

    @property
    def name(self) -> str:
        return self.document_id or self.filename or "(unnamed)"


@dataclass
class DuplicateChunk:
    chunk_index: int
    other_document_id: str
    other_chunk_index: int


@dataclass
class IngestResult:
    document_id: str
    outcome: Outcome
    version: str = ""
    chunks_written: int = 0
    chunks_skipped: int = 0
    duplicates: list[DuplicateChunk] = field(default_factory=list)
    error: str = ""
    error_type: type[TutorforgeError] | None = field(default=None, repr=False)


@dataclass
class Hit:
    text: str
    score: float
    document_id: str
    chunk_index: int
    metadata: DocumentMetadata
    point_id: str


@dataclass
class DocumentPage:
    documents: list[DocumentRecord]
    next_page_token: str
    total_size: int


def _document_id(record: DocumentRecord) -> str:
    return record.document_id


@dataclass
class Stats:
    documents: int
    chunks: int
    embedding_model: str
    embedding_dimensions: int
    store_backend: str
    documents_per_category: dict[str, int]


@dataclass
class _Prepared:
    position: int
    document_id: str
    version: str
    content_hash: str
    upload: DocumentUpload
    content_type: str
    chunks: list[Chunk]
    options: ChunkingOptions


class RetrievalService:
    def __init__(
        self,
        settings: RetrievalSettings,
        models: ModelSettings,
        artifacts: ArtifactStore,
        chunk_store: ChunkStore | None = None,
    ):
        self.settings = settings
        self.models = models
        self.catalog = DocumentCatalog(artifacts)
        self.extra_keys = ExtraKeys(artifacts)
        self._store = chunk_store
        self._encoder: Encoder | None = None
        self._init_lock = threading.RLock()
        self._locks_guard = threading.Lock()
        self._document_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        watch_collection(self)

    # Loaded on first use (once, even under concurrent calls), so a server starts in a second.
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._init_lock:
                if self._encoder is None:
                    self._encoder = Encoder(load_embedder(self.models), self.settings.embed_batch_size)
        return self._encoder

    @property
    def store(self) -> ChunkStore:
        if self._store is None:
            with self._init_lock:
                if self._store is None:
                    self._store = open_chunk_store(self.settings, self.encoder.dimensions)
                    self._warn_if_index_lost(self._store)
        return self._store

    def _warn_if_index_lost(self, store: ChunkStore) -> None:
        """Document records live in the artifact store, their chunks only in the index: a store served with
        another index (a new edge_path or Qdrant server, a wiped volume) lists documents that no search can
        find, and the tutor answers without passages. Said once, when the index opens."""
        if store.count(Where(must=(Match("state", (ACTIVE,)),))) > 0:
            return
        records = self.catalog.all()
        if records:
            where = self.settings.qdrant_url if self.settings.backend == "server" else str(self.settings.edge_path)
            log.warning(
                "the artifact store lists %d document(s) but the chunk index (%s, collection %s) holds no chunks: "
                "searches find nothing until they are ingested again (tutorforge ingest)",
                len(records), where, self.settings.collection,
            )

    def close(self) -> None:
        with self._init_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # ----------------------------------------------------------------------------------- ingest

    def default_options(self) -> ChunkingOptions:
        return ChunkingOptions(self.settings.chunk_size_tokens, self.settings.chunk_overlap_tokens)

    def ingest(self, uploads: Iterable[DocumentUpload], options: ChunkingOptions | None = None) -> list[IngestResult]:
        """Ingest documents as they arrive; one result per document, in order. Raises only when no
        document succeeded (with every document's error), so a lone bad upload is an error status."""
        options = (options or self.default_options()).validate(self.encoder.window)
        results: list[IngestResult | None] = []
        pending: list[_Prepared] = []
        for upload in uploads:
            results.append(None)
            outcome = self._prepare(len(results) - 1, upload, options)
            if isinstance(outcome, IngestResult):
                results[-1] = outcome
                continue
            pending.append(outcome)
            # Embed several small documents together: batches stay full.
            if sum(len(p.chunks) for p in pending) >= self.encoder.batch_size:
                self._embed_and_write(pending, results)
                pending = []
        self._embed_and_write(pending, results)
        self.store.optimize()
        done = [result for result in results if result is not None]
        if not done:
            raise InvalidArgument("the upload holds no documents: send a `document` header, then its `content`")
        failed = [result for result in done if result.outcome == "failed"]
        if len(failed) == len(done):
            error_type = failed[0].error_type or InvalidArgument
            raise error_type("; ".join(f"document {r.document_id!r}: {r.error}" for r in failed))
        return done

    def _prepare(self, position: int, upload: DocumentUpload, options: ChunkingOptions) -> _Prepared | IngestResult:
        document_id = upload.document_id or upload.filename
        try:
            document_id = document_id_for(upload.document_id, upload.filename)
            content_type = content_type_for(upload.content_type, upload.filename)
            upload.metadata.validate()
            limit = self.settings.max_document_bytes
            if upload.size > limit or len(upload.content) > limit:
                raise InvalidArgument(
                    f"document is {max(upload.size, len(upload.content))} bytes, over max_document_bytes={limit}; "
                    "split it into smaller documents (or raise TUTORFORGE_RETRIEVAL__MAX_DOCUMENT_BYTES)"
                )
            data = bytes(upload.content)
            content_hash = hashlib.sha256(data).hexdigest()
            version = self._version(content_hash, content_type, upload.metadata, options)
            unchanged = self._unchanged(document_id, version)
            if unchanged is not None:
                return unchanged
            text = extract_text(data, content_type, upload.name)
            chunks = chunk_text(text, self.encoder.tokenizer, options)
            if not chunks:
                raise InvalidArgument(f"document {upload.name!r} yields no chunks of text")
        except TutorforgeError as error:
            return IngestResult(document_id, "failed", error=error.message, error_type=type(error))
        return _Prepared(position, document_id, version, content_hash, upload, content_type, chunks, options)

    def _version(self, content_hash: str, content_type: str, metadata: DocumentMetadata, options: ChunkingOptions) -> str:
        """Everything the stored chunks depend on: same version = nothing to do."""
        basis = [content_hash, content_type, asdict(metadata), options.size, options.overlap, embedder_name(self.models)]
        return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]

    def _unchanged(self, document_id: str, version: str) -> IngestResult | None:
        record = self.catalog.find(document_id)
        if record is None or record.version != version:
            return None
        # The record alone is not proof: the vector store may have been reset since.
        if self.store.count(self._version_where(document_id, version, ACTIVE)) != record.chunk_count:
            return None
        return IngestResult(document_id, "unchanged", version=version, chunks_skipped=record.chunk_count)

    def _embed_and_write(self, pending: list[_Prepared], results: list[IngestResult | None]) -> None:
        if not pending:
            return
        try:
            vectors = self.encoder.dense([chunk.text for p in pending for chunk in p.chunks])
        except Exception as error:  # the embedder failing fails these documents, not the call
            log.exception("embedding failed")
            for prepared in pending:
                results[prepared.position] = IngestResult(prepared.document_id, "failed", error=f"embedding failed: {error}")
            return
        offset = 0
        for prepared in pending:
            document_vectors = vectors[offset : offset + len(prepared.chunks)]
            offset += len(prepared.chunks)
            try:
                results[prepared.position] = self._write(prepared, document_vectors)
            except TutorforgeError as error:
                results[prepared.position] = IngestResult(prepared.document_id, "failed", error=error.message, error_type=type(error))
            except Exception as error:
                log.exception("writing document %s failed", prepared.document_id)
                results[prepared.position] = IngestResult(
                    prepared.document_id, "failed", error=f"storing chunks failed ({type(error).__name__}: {error}); retry the upload"
                )

    def _write(self, prepared: _Prepared, vectors) -> IngestResult:  # noqa: ANN001 - numpy array
        document_id, version = prepared.document_id, prepared.version
        with self._document_lock(document_id):
            unchanged = self._unchanged(document_id, version)
            if unchanged is not None:  # the same version landed meanwhile
                return unchanged
            existing = self.catalog.find(document_id)
            metadata = prepared.upload.metadata
            duplicates = self._duplicates(document_id, prepared.chunks)
            self._register_extra_keys(metadata.extra)
            average_length = prepared.options.size
            points = [
                ChunkPoint(
                    id=point_id(document_id, version, chunk.index),
                    dense=vector,
                    sparse=self.encoder.sparse_document(chunk.token_ids, average_length),
                    payload=self._payload(document_id, version, chunk, metadata, prepared.upload.filename),
                )
                for chunk, vector in zip(prepared.chunks, vectors.tolist())
            ]
            others = Where(must=(Match("document_id", (document_id,)),), must_not=(Match("version", (version,)),))
            try:
                self.store.upsert(points)
                self.store.set_state(others, RETIRED)
                self.store.set_state(self._version_where(document_id, version), ACTIVE)
            except Exception:
                self._discard_staged(document_id, version)
                raise
            self.catalog.put(
                DocumentRecord(
                    document_id=document_id,
                    version=version,
                    content_hash=prepared.content_hash,
                    filename=prepared.upload.filename,
                    content_type=prepared.content_type,
                    metadata=metadata,
                    chunk_count=len(points),
                    size_bytes=len(prepared.upload.content),
                    ingested_at_unix=int(time.time()),
                    chunk_size_tokens=prepared.options.size,
                    chunk_overlap_tokens=prepared.options.overlap,
                )
            )
            self.store.delete(others)
            INGESTED_CHUNKS.inc(len(points))
        return IngestResult(
            document_id,
            "updated" if existing else "created",
            version=version,
            chunks_written=len(points),
            duplicates=duplicates,
        )

    def _discard_staged(self, document_id: str, version: str) -> None:
        """After a failed switch: drop the new version's invisible chunks and re-activate the old
        version if it was retired already (best effort: the store may be what failed)."""
        try:
            self.store.delete(self._version_where(document_id, version, STAGED))
            record = self.catalog.find(document_id)
            if record is not None and record.version != version:
                self.store.set_state(self._version_where(document_id, record.version, RETIRED), ACTIVE)
        except Exception:
            log.warning("could not clean up staged chunks of %s@%s; the next ingest of it will", document_id, version)

    @staticmethod
    def _payload(document_id: str, version: str, chunk: Chunk, metadata: DocumentMetadata, filename: str) -> dict:
        numeric = {key: number for key, value in metadata.extra.items() if (number := as_number(value)) is not None}
        return {
            "document_id": document_id,
            "version": version,
            "state": STAGED,
            "chunk_index": chunk.index,
            "text": chunk.text,
            "text_hash": text_hash(chunk.text),
            "filename": filename,
            "source": metadata.source,
            "category": metadata.category,
            "topic": metadata.topic,
            "extra": dict(metadata.extra),
            "extra_num": numeric,
        }

    def _duplicates(self, document_id: str, chunks: list[Chunk]) -> list[DuplicateChunk]:
        hashes = {text_hash(chunk.text): chunk.index for chunk in chunks}
        where = Where(
            must=(Match("text_hash", tuple(hashes)), Match("state", (ACTIVE,))),
            must_not=(Match("document_id", (document_id,)),),
        )
        first_seen: dict[str, tuple[str, int]] = {}
        for stored in sorted(self.store.scroll(where, limit=8 * len(hashes)), key=_citation):
            first_seen.setdefault(stored.payload["text_hash"], _citation(stored))
        return [
            DuplicateChunk(chunk.index, *first_seen[digest])
            for chunk in chunks
            if (digest := text_hash(chunk.text)) in first_seen
        ]

    def _register_extra_keys(self, extra: dict[str, str]) -> None:
        if not extra:
            return
        self.extra_keys.register(extra)
        for key, value in extra.items():
            self.store.ensure_index(f"extra.{key}")
            if as_number(value) is not None:
                self.store.ensure_index(f"extra_num.{key}", numeric=True)

    # ----------------------------------------------------------------------------------- search

    def search(
        self,
        query: str,
        limit: int | None = None,
        score_threshold: float | None = None,
        filters: Iterable[FieldFilter] = (),
        mode: SearchMode = "dense",
    ) -> list[Hit]:
        if not query or not query.strip():
            raise InvalidArgument("query is empty: give the text to search for")
        limit = self.settings.default_limit if limit is None else limit
        if limit <= 0 or limit > self.settings.max_limit:
            raise InvalidArgument(f"limit must be between 1 and {self.settings.max_limit}, got {limit}")
        if mode not in SEARCH_MODES:
            raise InvalidArgument(f"mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")
        if score_threshold is not None and not math.isfinite(score_threshold):
            raise InvalidArgument(f"score_threshold must be a finite number, got {score_threshold}")
        with observe_search(mode, limit):
            resolved = resolve(list(filters), self.extra_keys)
            where = Where(must=(Match("state", (ACTIVE,)), *store_conditions(resolved)))
            threshold = None
            if mode == "dense":
                threshold = self.settings.default_score_threshold if score_threshold is None else score_threshold
            sparse = self.encoder.sparse_query(query) if mode != "dense" else None
            if sparse is not None and not sparse.indices:
                # Only stop words or punctuation: no terms to match; hybrid keeps its dense side.
                if mode == "sparse":
                    return []
                mode, sparse = "dense", None
            dense = self.encoder.dense([query])[0].tolist() if mode != "sparse" else None
            found = self.store.query(
                VectorQuery(
                    mode=mode, limit=limit, where=where, dense=dense, sparse=sparse, score_threshold=threshold,
                    prefetch_limit=max(4 * limit, 40),
                )
            )
        return [self._hit(stored) for stored in found]

    @staticmethod
    def _hit(stored: StoredChunk) -> Hit:
        payload = stored.payload
        return Hit(
            text=payload["text"],
            score=stored.score,
            document_id=payload["document_id"],
            chunk_index=int(payload["chunk_index"]),
            metadata=DocumentMetadata(
                source=payload.get("source", ""),
                category=payload.get("category", ""),
                topic=payload.get("topic", ""),
                extra=dict(payload.get("extra") or {}),
            ),
            point_id=stored.id,
        )

    # -------------------------------------------------------------------------------- documents

    def get_document(self, document_id: str, include_chunks: bool = False) -> tuple[DocumentRecord, list[Chunk]]:
        record = self.catalog.get(document_id)
        if not include_chunks:
            return record, []
        stored = self.store.scroll(self._version_where(record.document_id, record.version, ACTIVE), limit=record.chunk_count + 1)
        chunks = sorted(
            (Chunk(int(s.payload["chunk_index"]), s.payload["text"], ()) for s in stored), key=lambda chunk: chunk.index
        )
        return record, chunks

    def list_documents(self, page_size: int = 0, page_token: str = "", filters: Iterable[FieldFilter] = ()) -> DocumentPage:
        resolved = resolve(list(filters), self.extra_keys)
        matching = sorted(
            (record for record in self.catalog.all() if record_matches(record, resolved)), key=lambda r: r.document_id
        )
        # Keyset tokens: the id of the last document given (ids are names, see documents.document_id_for).
        page, token = keyset_page(
            matching, _document_id, page_size, page_token, default_size=DEFAULT_PAGE_SIZE, token_pattern=NAME_PATTERN
        )
        return DocumentPage(page, token, len(matching))

    def delete_document(self, document_id: str) -> int:
        """Remove a document's chunks (every version) and record; returns how many chunks went."""
        record = self.catalog.get(document_id)
        with self._document_lock(record.document_id):
            where = Where(must=(Match("document_id", (record.document_id,)),))
            deleted = self.store.count(where)
            self.store.delete(where)
            self.catalog.remove(record.document_id)
        self.store.optimize()
        return deleted

    def active_chunks(self) -> int | None:
        """Size of the collection for the metrics scrape; None while the store is not open (nothing loads for it)."""
        store = self._store
        return None if store is None else store.count(Where(must=(Match("state", (ACTIVE,)),)))

    def stats(self) -> Stats:
        records = self.catalog.all()
        per_category: dict[str, int] = defaultdict(int)
        for record in records:
            per_category[record.metadata.category or "(none)"] += 1
        return Stats(
            documents=len(records),
            chunks=self.store.count(Where(must=(Match("state", (ACTIVE,)),))),
            embedding_model=embedder_name(self.models),
            embedding_dimensions=self.encoder.dimensions,
            store_backend=self.store.backend,
            documents_per_category=dict(per_category),
        )

    # ---------------------------------------------------------------------------------- helpers

    @staticmethod
    def _version_where(document_id: str, version: str, state: str | None = None) -> Where:
        must = (Match("document_id", (document_id,)), Match("version", (version,)))
        return Where(must=must + ((Match("state", (state,)),) if state else ()))

    @contextmanager
    def _document_lock(self, document_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._document_locks[document_id]
        with lock:
            yield


def _citation(stored: StoredChunk) -> tuple[str, int]:
    return stored.payload["document_id"], int(stored.payload["chunk_index"])
