"""Client commands of the retrieval service: `ingest`, `search`, `documents list|show|delete`, `stats`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from tutorforge.client import RetrievalClient
from tutorforge.core.cli_support import (
    DEFAULT_ADDRESS,
    AddressOption,
    JsonOption,
    connect,
    console,
    print_json,
    rpc_errors,
    to_dict,
)
from tutorforge.v1 import retrieval_pb2 as pb

SUPPORTED_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf"}
_MODES = {"dense": pb.SEARCH_MODE_DENSE, "sparse": pb.SEARCH_MODE_SPARSE, "hybrid": pb.SEARCH_MODE_HYBRID}
_FILTER = re.compile(r"^(?P<field>[A-Za-z][\w.-]*)\s*(?P<op>>=|<=|>|<|=)\s*(?P<value>.*)$")
_RANGE_BOUNDS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}

FilterOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--filter",
        help="Metadata filter, repeatable: field=value, field=a|b (any of), or a range field>=5, field<9. "
        "Fields: source, category, topic, document_id, or an extra key.",
    ),
]
documents_app = typer.Typer(help="Inspect and delete ingested documents.", no_args_is_help=True)


def _client(address: str) -> RetrievalClient:
    return connect(address).retrieval


def parse_filter(text: str) -> pb.MetadataFilter:
    match = _FILTER.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r}: write field=value, field=a|b, or field>=number")
    field, op, value = match["field"], match["op"], match["value"].strip()
    if op == "=":
        values = value.split("|")
        if len(values) > 1:
            return pb.MetadataFilter(field=field, any_of=pb.StringList(values=values))
        return pb.MetadataFilter(field=field, equals=value)
    try:
        bound = float(value)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: a range bound must be a number") from None
    return pb.MetadataFilter(field=field, range=pb.NumericRange(**{_RANGE_BOUNDS[op]: bound}))


def _parse_filters(texts: list[str] | None) -> list[pb.MetadataFilter]:
    return [parse_filter(text) for text in texts or []]


def _parse_meta(pairs: list[str] | None) -> dict[str, str]:
    extra = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--meta {pair!r}: write key=value")
        extra[key.strip()] = value.strip()
    return extra


def _files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist")
    if not found:
        raise typer.BadParameter(f"no .txt/.md/.html/.pdf files in {', '.join(map(str, paths))}")
    return found


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(search)
    app.command()(stats)
    app.add_typer(documents_app, name="documents")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (.txt, .md, .html, .pdf; folders recursively).")],
    category: Annotated[str, typer.Option(help="Category of every document.")] = "",
    topic: Annotated[str, typer.Option(help="Topic of every document.")] = "",
    source: Annotated[str, typer.Option(help="Source to cite (default: each file's name).")] = "",
    meta: Annotated[Optional[list[str]], typer.Option("--meta", help="Extra metadata key=value, repeatable.")] = None,
    chunk_size: Annotated[int, typer.Option(help="Chunk size in embedder tokens (0 = server default, 512).")] = 0,
    chunk_overlap: Annotated[int, typer.Option(help="Overlap in tokens (0 = server default, 64).")] = 0,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Upload documents (streamed) and print what happened to each."""
    files = _files(paths)
    extra = _parse_meta(meta)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, disable=json_output,
    )

    with rpc_errors(), progress:
        task = progress.add_task("uploading", total=sum(file.stat().st_size for file in files))

        def sent(filename: str, size: int) -> None:
            progress.update(task, description=f"ingesting {filename}" if filename else "embedding and indexing", advance=size)

        response = _client(address).ingest(
            files, category=category, topic=topic, source=source, extra=extra,
            chunk_size_tokens=chunk_size, chunk_overlap_tokens=chunk_overlap, on_sent=sent,
        )
    if json_output:
        print_json(response)
    else:
        table = Table(Column("document", no_wrap=True), "outcome", "version", "written", "skipped", "duplicates / error")
        for result in response.results:
            outcome = pb.IngestOutcome.Name(result.outcome).removeprefix("INGEST_OUTCOME_").lower()
            note = result.error or ", ".join(
                f"#{d.chunk_index} = {d.other_document_id}#{d.other_chunk_index}" for d in result.duplicates
            )
            style = "red" if result.outcome == pb.INGEST_OUTCOME_FAILED else ""
            table.add_row(result.document_id, outcome, result.version, str(result.chunks_written), str(result.chunks_skipped), note, style=style)
        console.print(table)
    if any(result.outcome == pb.INGEST_OUTCOME_FAILED for result in response.results):
        raise typer.Exit(code=1)


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    limit: Annotated[Optional[int], typer.Option(min=1, help="Number of hits (server default 3).")] = None,
    mode: Annotated[str, typer.Option(help="dense, sparse (BM25-style) or hybrid (RRF fusion of both).")] = "hybrid",
    filters: FilterOption = None,
    threshold: Annotated[Optional[float], typer.Option(help="Minimum score, dense mode only (server default 0.7).")] = None,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Search the ingested material; every hit cites its document and chunk."""
    if mode not in _MODES:
        raise typer.BadParameter(f"--mode {mode!r}: choose dense, sparse or hybrid")
    with rpc_errors():
        hits = _client(address).search(query, limit=limit or 0, mode=_MODES[mode], filters=_parse_filters(filters), score_threshold=threshold)
    response = pb.SearchResponse(hits=hits)
    if json_output:
        print_json(response)
        return
    if not response.hits:
        console.print("[yellow]no hits[/] (dense mode drops hits under the score threshold; try --mode hybrid)")
    for rank, hit in enumerate(response.hits, 1):
        cite = f"{hit.document_id} #{hit.chunk_index}" + (f" — {hit.metadata.source}" if hit.metadata.source else "")
        console.print(f"[bold cyan]{rank}.[/] [dim]score {hit.score:.3f}[/]  [bold]{cite}[/]")
        console.print(_excerpt(hit.text), highlight=False)


def _excerpt(text: str, width: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@documents_app.command("list")
def list_documents(
    filters: FilterOption = None,
    page_size: Annotated[int, typer.Option(min=0, help="Documents per page (0 = all pages).")] = 0,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """List ingested documents (all pages unless --page-size)."""
    client, documents, token = _client(address), [], ""
    with rpc_errors():
        while True:
            request = pb.ListDocumentsRequest(page_size=page_size, page_token=token, filters=_parse_filters(filters))
            # One page at a time (the SDK's documents() follows every page): --page-size stops after one.
            page = client.connection.unary(client.stub.ListDocuments, request, "read")
            documents.extend(page.documents)
            token = page.next_page_token
            if not token or page_size:
                break
    if json_output:
        print_json({"documents": [to_dict(d) for d in documents], "next_page_token": token, "total_size": page.total_size})
        return
    table = Table(Column("document", no_wrap=True), "version", "type", "chunks", "bytes", "category", "topic", "source", title=f"{page.total_size} documents")
    for d in documents:
        table.add_row(d.document_id, d.version, d.content_type, str(d.chunk_count), str(d.size_bytes), d.metadata.category, d.metadata.topic, d.metadata.source)
    console.print(table)


@documents_app.command("show")
def show_document(
    document_id: Annotated[str, typer.Argument(help="Document id.")],
    chunks: Annotated[bool, typer.Option("--chunks", help="Also print the chunks' text.")] = False,
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Show one document's record (and chunks)."""
    with rpc_errors():
        response = _client(address).get_document(document_id, include_chunks=chunks)
    if json_output:
        print_json(response)
        return
    d = response.document
    table = Table(show_header=False)
    for name, value in [
        ("document", d.document_id), ("version", d.version), ("filename", d.filename), ("type", d.content_type),
        ("chunks", d.chunk_count), ("bytes", d.size_bytes), ("source", d.metadata.source),
        ("category", d.metadata.category), ("topic", d.metadata.topic),
        *((f"extra.{k}", v) for k, v in sorted(d.metadata.extra.items())),
    ]:
        table.add_row(name, str(value))
    console.print(table)
    for chunk in response.chunks:
        console.print(f"[bold cyan]#{chunk.chunk_index}[/] {_excerpt(chunk.text)}", highlight=False)


@documents_app.command("delete")
def delete_document(
    document_id: Annotated[str, typer.Argument(help="Document id.")],
    address: AddressOption = DEFAULT_ADDRESS,
    json_output: JsonOption = False,
) -> None:
    """Delete a document and all its chunks."""
    with rpc_errors():
        deleted = _client(address).delete_document(document_id)
    if json_output:
        print_json(pb.DeleteDocumentResponse(chunks_deleted=deleted))
    else:
        console.print(f"deleted {document_id} ({deleted} chunks)")


def stats(address: AddressOption = DEFAULT_ADDRESS, json_output: JsonOption = False) -> None:
    """Documents, chunks and the embedder/store in use."""
    with rpc_errors():
        response = _client(address).stats()
    if json_output:
        print_json(response)
        return
    console.print(
        f"{response.documents} documents, {response.chunks} chunks; embedder {response.embedding_model} "
        f"({response.embedding_dimensions} dims); store {response.store_backend}"
    )
    for category, count in sorted(response.documents_per_category.items()):
        console.print(f"  {category}: {count}")
