"""RetrievalClient: ingest teaching material, search it with cited sources, manage documents."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutorforge.client.connection import Connection
from tutorforge.client.convert import enum_value
from tutorforge.core.errors import InvalidArgument
from tutorforge.v1 import retrieval_pb2 as pb
from tutorforge.v1 import retrieval_pb2_grpc

# Upload pieces stay well under the 64 MiB message limit.
_PIECE = 1024 * 1024


@dataclass(frozen=True)
class Document:
    """One document to ingest: a file (read when sent) or bytes, with the metadata its hits will cite."""

    path: Path | None = None
    content: bytes | None = None
    filename: str = ""
    document_id: str = ""  # "" = derived from the filename by the server
    source: str = ""  # "" = the filename
    category: str = ""
    topic: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def header(self) -> pb.DocumentHeader:
        filename = self.filename or (self.path.name if self.path else "")
        metadata = pb.DocumentMetadata(source=self.source or filename, category=self.category, topic=self.topic, extra=dict(self.extra))
        return pb.DocumentHeader(document_id=self.document_id, filename=filename, metadata=metadata)

    def pieces(self) -> Iterator[bytes]:
        if self.content is not None:
            for start in range(0, len(self.content), _PIECE):
                yield self.content[start : start + _PIECE]
            return
        with Path(self.path).open("rb") as handle:
            while piece := handle.read(_PIECE):
                yield piece


def _documents(items: Iterable[Document | str | Path], metadata: dict[str, Any]) -> list[Document]:
    documents = []
    for index, item in enumerate([items] if isinstance(items, (str, Path, Document)) else items):
        if isinstance(item, Document):
            documents.append(item)
            continue
        path = Path(item)
        if not path.is_file():
            raise InvalidArgument(f"documents[{index}]: {path} is not a readable file")
        documents.append(Document(path=path, **metadata))
    return documents


def filters_of(filters: Mapping[str, Any] | Iterable[pb.MetadataFilter] | None) -> list[pb.MetadataFilter]:
    """Metadata filters from protos or a mapping: {"category": "physics"} (equals), {"topic": ["a", "b"]} (any of)."""
    if filters is None:
        return []
    if not isinstance(filters, Mapping):
        return list(filters)
    made = []
    for name, value in filters.items():
        if isinstance(value, (list, tuple, set)):
            made.append(pb.MetadataFilter(field=name, any_of=pb.StringList(values=[str(v) for v in value])))
        else:
            made.append(pb.MetadataFilter(field=name, equals=str(value)))
    return made


class RetrievalClient:
    def __init__(self, connection: Connection):
        self.connection = connection
        self.stub = retrieval_pb2_grpc.RetrievalServiceStub(connection.channel)

    def ingest(
        self,
        documents: Iterable[Document | str | Path] | Document | str | Path,
        *,
        category: str = "",
        topic: str = "",
        source: str = "",
        extra: Mapping[str, str] | None = None,
        chunk_size_tokens: int = 0,
        chunk_overlap_tokens: int = 0,
        on_sent: Callable[[str, int], None] | None = None,
    ) -> pb.IngestDocumentsResponse:
        """Upload files (or Documents) in one stream; the metadata applies to the paths given as such.
        Re-ingesting unchanged content writes nothing (outcome UNCHANGED). `on_sent(filename, size)` follows
        the upload piece by piece, then gets ("", 0) once all is sent (the server embeds and indexes)."""
        items = _documents(documents, {"category": category, "topic": topic, "source": source, "extra": dict(extra or {})})

        def requests() -> Iterator[pb.IngestDocumentsRequest]:
            if chunk_size_tokens or chunk_overlap_tokens:
                options = pb.ChunkingOptions(chunk_size_tokens=chunk_size_tokens, chunk_overlap_tokens=chunk_overlap_tokens)
                yield pb.IngestDocumentsRequest(options=options)
            for document in items:
                header = document.header()
                yield pb.IngestDocumentsRequest(document=header)
                for piece in document.pieces():
                    yield pb.IngestDocumentsRequest(content=piece)
                    if on_sent is not None:
                        on_sent(header.filename, len(piece))
            if on_sent is not None:
                on_sent("", 0)

        return self.connection.upload(self.stub.IngestDocuments, requests, "ingest")

    def search(
        self,
        query: str,
        *,
        limit: int = 0,
        mode: str | int = "hybrid",
        filters: Mapping[str, Any] | Iterable[pb.MetadataFilter] | None = None,
        score_threshold: float | None = None,
    ) -> list[pb.SearchHit]:
        """Passages for `query`, best first, each citing its document, chunk and source. `mode` is dense,
        sparse or hybrid; `score_threshold` applies to dense (server default 0.7)."""
        request = pb.SearchRequest(
            query=query, limit=limit, mode=enum_value(pb.SearchMode, "SEARCH_MODE_", mode, "mode"), filters=filters_of(filters)
        )
        if score_threshold is not None:
            request.score_threshold = score_threshold
        return list(self.connection.unary(self.stub.Search, request, "read").hits)

    def get_document(self, document_id: str, include_chunks: bool = False) -> pb.GetDocumentResponse:
        request = pb.GetDocumentRequest(document_id=document_id, include_chunks=include_chunks)
        return self.connection.unary(self.stub.GetDocument, request, "read")

    def documents(self, filters: Mapping[str, Any] | Iterable[pb.MetadataFilter] | None = None, page_size: int = 100) -> Iterator[pb.DocumentInfo]:
        """Every ingested document matching `filters`, page by page."""
        wanted = filters_of(filters)
        pages = self.connection.pages(
            self.stub.ListDocuments, lambda token: pb.ListDocumentsRequest(page_size=page_size, page_token=token, filters=wanted)
        )
        return (document for page in pages for document in page.documents)

    def delete_document(self, document_id: str) -> int:
        """Deletes a document's chunks and record; returns how many chunks went."""
        request = pb.DeleteDocumentRequest(document_id=document_id)
        return self.connection.unary(self.stub.DeleteDocument, request, "write").chunks_deleted

    def stats(self) -> pb.GetStatsResponse:
        return self.connection.unary(self.stub.GetStats, pb.GetStatsRequest(), "read")
