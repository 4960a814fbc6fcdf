"""Demo stage: ingest the bundled teaching material over gRPC, then run example searches whose hits
cite their document, chunk and source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.table import Table

from tutorforge.samples import material_documents
from tutorforge.v1 import retrieval_pb2 as pb
from tutorforge.v1 import retrieval_pb2_grpc

if TYPE_CHECKING:
    from tutorforge.demo import DemoContext

TITLE = "Retrieval: ingest the sample material, search it with cited sources"

EXAMPLE_SEARCHES = (
    ("Why can't I add the denominators when adding fractions?", pb.SEARCH_MODE_HYBRID, []),
    ("What happens to light energy inside a leaf?", pb.SEARCH_MODE_HYBRID, []),
    ("equal and opposite forces", pb.SEARCH_MODE_SPARSE, [pb.MetadataFilter(field="category", equals="physics")]),
    ("How should a tutor answer a student who just wants the answer?", pb.SEARCH_MODE_DENSE, []),
)


def _upload() -> Iterator[pb.IngestDocumentsRequest]:
    for document in material_documents():
        metadata = pb.DocumentMetadata(source=document.source, category=document.category, topic=document.topic, extra=document.extra)
        yield pb.IngestDocumentsRequest(
            document=pb.DocumentHeader(document_id=document.document_id, filename=document.path.name, metadata=metadata)
        )
        yield pb.IngestDocumentsRequest(content=document.path.read_bytes())


def ingest_samples(stub: retrieval_pb2_grpc.RetrievalServiceStub) -> pb.IngestDocumentsResponse:
    """Ingest the bundled material (the demo, the tutor benchmark)."""
    return stub.IngestDocuments(_upload())


def run(context: DemoContext) -> None:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(context.channel)
    console = context.console
    started = time.perf_counter()
    with console.status(f"ingesting {len(material_documents())} documents (embedding on CPU)…"):
        response = ingest_samples(stub)
    seconds = time.perf_counter() - started
    written = sum(result.chunks_written for result in response.results)
    table = Table("document", "outcome", "chunks", title=f"ingested in {seconds:.1f} s ({written} chunks written)")
    for result in response.results:
        outcome = pb.IngestOutcome.Name(result.outcome).removeprefix("INGEST_OUTCOME_").lower()
        table.add_row(result.document_id, outcome if not result.error else f"{outcome}: {result.error}", str(result.chunks_written or result.chunks_skipped))
    console.print(table)

    for query, mode, filters in EXAMPLE_SEARCHES:
        request = pb.SearchRequest(query=query, mode=mode, limit=3, filters=filters)
        if mode == pb.SEARCH_MODE_DENSE:
            request.score_threshold = 0.3  # MiniLM cosines of question vs. passage rarely reach the 0.7 default
        hits = stub.Search(request).hits
        mode_name = pb.SearchMode.Name(mode).removeprefix("SEARCH_MODE_").lower()
        where = f", {filters[0].field}={filters[0].equals}" if filters else ""
        console.print(f"\n[bold]?[/] {query} [dim]({mode_name}{where})[/]")
        for rank, hit in enumerate(hits, 1):
            excerpt = " ".join(hit.text.split())[:180]
            console.print(f"  [cyan]{rank}.[/] [bold]{hit.document_id} #{hit.chunk_index}[/] [dim]{hit.metadata.source} · score {hit.score:.3f}[/]")
            console.print(f"     {excerpt}…", highlight=False)
    stats = stub.GetStats(pb.GetStatsRequest())
    console.print(f"\n{stats.documents} documents, {stats.chunks} chunks in the {stats.store_backend} store ({stats.embedding_model})")
