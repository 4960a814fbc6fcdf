"""gRPC RetrievalService: translates protobuf to the domain (`RetrievalService`) and back. Domain
errors become status codes in the server interceptor."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.runtime import Runtime
from tutorforge.retrieval.chunking import ChunkingOptions
from tutorforge.retrieval.documents import DocumentMetadata, DocumentRecord
from tutorforge.retrieval.filters import FieldFilter
from tutorforge.retrieval.service import DocumentUpload, IngestResult, RetrievalService
from tutorforge.v1 import retrieval_pb2 as pb
from tutorforge.v1 import retrieval_pb2_grpc

SERVICE_NAME = "tutorforge.v1.RetrievalService"
_OUTCOMES = {
    "created": pb.INGEST_OUTCOME_CREATED,
    "updated": pb.INGEST_OUTCOME_UPDATED,
    "unchanged": pb.INGEST_OUTCOME_UNCHANGED,
    "failed": pb.INGEST_OUTCOME_FAILED,
}
_MODES = {pb.SEARCH_MODE_UNSPECIFIED: "dense", pb.SEARCH_MODE_DENSE: "dense", pb.SEARCH_MODE_SPARSE: "sparse", pb.SEARCH_MODE_HYBRID: "hybrid"}


def metadata_from_proto(message: pb.DocumentMetadata) -> DocumentMetadata:
    return DocumentMetadata(message.source, message.category, message.topic, dict(message.extra))


def metadata_to_proto(metadata: DocumentMetadata) -> pb.DocumentMetadata:
    return pb.DocumentMetadata(source=metadata.source, category=metadata.category, topic=metadata.topic, extra=metadata.extra)


def filters_from_proto(messages) -> list[FieldFilter]:  # noqa: ANN001 - repeated MetadataFilter
    filters = []
    for position, message in enumerate(messages):
        kind = message.WhichOneof("condition")
        if kind == "equals":
            filters.append(FieldFilter(message.field, equals=message.equals))
        elif kind == "any_of":
            filters.append(FieldFilter(message.field, any_of=tuple(message.any_of.values)))
        elif kind == "range":
            bounds = {name: getattr(message.range, name) if message.range.HasField(name) else None for name in ("gt", "gte", "lt", "lte")}
            if all(value is None for value in bounds.values()):
                raise InvalidArgument(f"filters[{position}].range ({message.field}) has no bound; set gt, gte, lt or lte")
            filters.append(FieldFilter(message.field, **bounds))
        else:
            raise InvalidArgument(f"filters[{position}] ({message.field}) has no condition; set equals, any_of or range")
    return filters


def document_to_proto(record: DocumentRecord) -> pb.DocumentInfo:
    return pb.DocumentInfo(
        document_id=record.document_id,
        version=record.version,
        filename=record.filename,
        content_type=record.content_type,
        metadata=metadata_to_proto(record.metadata),
        chunk_count=record.chunk_count,
        size_bytes=record.size_bytes,
        ingested_at_unix=record.ingested_at_unix,
    )


def _result_to_proto(result: IngestResult) -> pb.DocumentIngestResult:
    return pb.DocumentIngestResult(
        document_id=result.document_id,
        version=result.version,
        outcome=_OUTCOMES[result.outcome],
        chunks_written=result.chunks_written,
        chunks_skipped=result.chunks_skipped,
        duplicates=[
            pb.DuplicateChunk(chunk_index=d.chunk_index, other_document_id=d.other_document_id, other_chunk_index=d.other_chunk_index)
            for d in result.duplicates
        ],
        error=result.error,
    )


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, service: RetrievalService):
        self.service = service

    def IngestDocuments(self, request_iterator: Iterator[pb.IngestDocumentsRequest], context: grpc.ServicerContext):
        first = next(request_iterator, None)
        options = None
        if first is not None and first.WhichOneof("payload") == "options":
            defaults = self.service.default_options()
            options = ChunkingOptions(
                first.options.chunk_size_tokens or defaults.size,
                first.options.chunk_overlap_tokens or defaults.overlap,
            )
            first = None
        results = self.service.ingest(self._uploads(first, request_iterator), options)
        return pb.IngestDocumentsResponse(results=[_result_to_proto(result) for result in results])

    def _uploads(self, first: pb.IngestDocumentsRequest | None, rest: Iterator[pb.IngestDocumentsRequest]) -> Iterator[DocumentUpload]:
        """Documents as they complete (a header, then content messages), so ingest overlaps the upload."""
        limit = self.service.settings.max_document_bytes
        current: DocumentUpload | None = None
        messages = rest if first is None else _prepend(first, rest)
        for message in messages:
            kind = message.WhichOneof("payload")
            if kind == "document":
                if current is not None:
                    yield current
                header = message.document
                current = DocumentUpload(header.document_id, header.filename, header.content_type, metadata_from_proto(header.metadata))
            elif kind == "content":
                if current is None:
                    raise InvalidArgument("content arrived before any `document` header: send the header first")
                current.append(message.content, limit)
            elif kind == "options":
                raise InvalidArgument("options must be the first message of the upload, before any document")
            else:
                raise InvalidArgument("an upload message has no payload: set options, document or content")
        if current is not None:
            yield current

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        hits = self.service.search(
            request.query,
            # proto3: 0 means "not set" (the default limit); negative values are rejected by the domain.
            limit=request.limit or None,
            score_threshold=request.score_threshold if request.HasField("score_threshold") else None,
            filters=filters_from_proto(request.filters),
            mode=_MODES.get(request.mode, "unknown"),
        )
        return pb.SearchResponse(
            hits=[
                pb.SearchHit(
                    text=hit.text,
                    score=hit.score,
                    document_id=hit.document_id,
                    chunk_index=hit.chunk_index,
                    metadata=metadata_to_proto(hit.metadata),
                    point_id=hit.point_id,
                )
                for hit in hits
            ]
        )

    def GetDocument(self, request: pb.GetDocumentRequest, context: grpc.ServicerContext) -> pb.GetDocumentResponse:
        record, chunks = self.service.get_document(request.document_id, request.include_chunks)
        return pb.GetDocumentResponse(
            document=document_to_proto(record),
            chunks=[pb.DocumentChunk(chunk_index=chunk.index, text=chunk.text) for chunk in chunks],
        )

    def ListDocuments(self, request: pb.ListDocumentsRequest, context: grpc.ServicerContext) -> pb.ListDocumentsResponse:
        page = self.service.list_documents(request.page_size, request.page_token, filters_from_proto(request.filters))
        return pb.ListDocumentsResponse(
            documents=[document_to_proto(record) for record in page.documents],
            next_page_token=page.next_page_token,
            total_size=page.total_size,
        )

    def DeleteDocument(self, request: pb.DeleteDocumentRequest, context: grpc.ServicerContext) -> pb.DeleteDocumentResponse:
        return pb.DeleteDocumentResponse(chunks_deleted=self.service.delete_document(request.document_id))

    def GetStats(self, request: pb.GetStatsRequest, context: grpc.ServicerContext) -> pb.GetStatsResponse:
        stats = self.service.stats()
        return pb.GetStatsResponse(
            documents=stats.documents,
            chunks=stats.chunks,
            embedding_model=stats.embedding_model,
            embedding_dimensions=stats.embedding_dimensions,
            store_backend=stats.store_backend,
            documents_per_category=stats.documents_per_category,
        )


def _prepend(first: pb.IngestDocumentsRequest, rest: Iterator[pb.IngestDocumentsRequest]) -> Iterator[pb.IngestDocumentsRequest]:
    yield first
    yield from rest


def register(server: grpc.Server, runtime: Runtime) -> str:
    service = RetrievalService(runtime.settings.retrieval, runtime.settings.models, runtime.store)
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(RetrievalServicer(service), server)
    runtime.on_shutdown(service.close)
    return SERVICE_NAME
