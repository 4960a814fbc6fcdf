"""Retrieval benchmark: ingest throughput against the embedder's raw throughput, and search latency
(p50/p99, dense and hybrid) at 10k and 100k chunks on the embedded Qdrant engine (qdrant-edge).

    python bench/retrieval.py            # ingest 96 chunks; latency at 10k and 100k chunks
    python bench/retrieval.py --quick    # ingest 24 chunks; latency at 2k and 10k chunks

Ingest is measured on real text (sentences of the bundled teaching material, shuffled into
documents) through the gRPC IngestDocuments path: parse, chunk, embed, sparse-encode, upsert, switch.
For latency, embedding 100k chunks would take hours on 2 cores, so the store is filled with random
unit vectors and Zipf-distributed sparse vectors (said in the output); queries are random unit vectors
and real tokenized questions, filtered on the active state as the service's searches are."""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from tutorforge.artifacts.store import ArtifactStore  # noqa: E402
from tutorforge.core.models import load_embedder  # noqa: E402
from tutorforge.core.server import start_server  # noqa: E402
from tutorforge.core.settings import Settings  # noqa: E402
from tutorforge.retrieval.chunking import chunk_text  # noqa: E402
from tutorforge.retrieval.documents import extract_text  # noqa: E402
from tutorforge.retrieval.edge_store import EdgeChunkStore  # noqa: E402
from tutorforge.retrieval.encoding import Encoder  # noqa: E402
from tutorforge.retrieval.service import RetrievalService, point_id  # noqa: E402
from tutorforge.retrieval.store import ACTIVE, ChunkPoint, Match, SparseVector, VectorQuery, Where  # noqa: E402
from tutorforge.samples import material_documents, read_jsonl, retrieval_queries  # noqa: E402
from tutorforge.v1 import retrieval_pb2 as pb  # noqa: E402
from tutorforge.v1 import retrieval_pb2_grpc  # noqa: E402

CATEGORIES = ("mathematics", "physics", "biology", "history", "chemistry")


def _sentences() -> list[str]:
    found = []
    for document in material_documents():
        text = extract_text(document.path.read_bytes(), _type(document.path), document.path.name)
        found += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6 and "|" not in s]
    return found


def _type(path: Path) -> str:
    return {".md": "text/markdown", ".html": "text/html", ".pdf": "application/pdf"}.get(path.suffix, "text/plain")


def _documents(count: int, chunks_each: int, encoder: Encoder, settings: Settings) -> list[str]:
    """`count` documents of shuffled real sentences, each about `chunks_each` default-size chunks."""
    rng = random.Random(7)
    sentences = _sentences()
    budget = settings.retrieval.chunk_size_tokens * chunks_each
    documents = []
    for _ in range(count):
        picked, tokens = [], 0
        while tokens < budget * 0.95:
            sentence = rng.choice(sentences)
            picked.append(sentence)
            tokens += len(encoder.tokenizer(sentence, add_special_tokens=False)["input_ids"])
        documents.append(" ".join(picked))
    return documents


def bench_ingest(chunks_wanted: int, settings: Settings, encoder: Encoder) -> None:
    documents = _documents(max(1, chunks_wanted // 8), 8, encoder, settings)
    options = settings.retrieval
    from tutorforge.retrieval.chunking import ChunkingOptions

    chunking = ChunkingOptions(options.chunk_size_tokens, options.chunk_overlap_tokens)
    texts = [chunk.text for document in documents for chunk in chunk_text(document, encoder.tokenizer, chunking)]
    encoder.dense(texts[:8])  # warm-up
    started = time.perf_counter()
    encoder.dense(texts)
    raw = len(texts) / (time.perf_counter() - started)

    running = start_server(settings, ["retrieval"], port=0)
    try:
        from tutorforge.core.client import open_channel

        stub = retrieval_pb2_grpc.RetrievalServiceStub(open_channel(running.address))

        def upload():
            for index, document in enumerate(documents):
                yield pb.IngestDocumentsRequest(document=pb.DocumentHeader(document_id=f"doc-{index}", filename=f"doc-{index}.txt"))
                yield pb.IngestDocumentsRequest(content=document.encode())

        started = time.perf_counter()
        results = stub.IngestDocuments(upload()).results
        seconds = time.perf_counter() - started
    finally:
        running.stop(grace=1)
    written = sum(result.chunks_written for result in results)
    service = written / seconds
    print(f"ingest ({len(documents)} documents of real text, {written} chunks of {options.chunk_size_tokens} tokens):")
    print(f"  raw embedder      {raw:8.2f} chunks/s   (SentenceTransformer.encode, batch {options.embed_batch_size})")
    print(f"  service ingest    {service:8.2f} chunks/s   (gRPC stream -> parse, chunk, embed, sparse, upsert, switch)")
    print(f"  ratio             {service / raw:8.1%}         (target >= 90%)")


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"


def bench_latency(size: int, root: Path, encoder: Encoder, settings: Settings, queries: list[str]) -> None:
    rng = np.random.default_rng(size)
    store = EdgeChunkStore.open(root / f"edge-{size}", encoder.dimensions)
    # Zipf-ranked terms over the real word-piece vocabulary, so that query terms hit long and short
    # posting lists as in real text.
    terms_by_rank = rng.permutation(sorted(set(encoder.tokenizer.get_vocab().values()) - encoder.ignored_ids))
    started = time.perf_counter()
    for start in range(0, size, 2000):
        count = min(2000, size - start)
        dense = rng.standard_normal((count, encoder.dimensions)).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        terms = terms_by_rank[(rng.zipf(1.1, size=(count, 60)) - 1) % len(terms_by_rank)]
        points = []
        for offset in range(count):
            index = start + offset
            unique, counts = np.unique(terms[offset], return_counts=True)
            document_id = f"doc-{index // 8}"
            points.append(
                ChunkPoint(
                    id=point_id(document_id, "v1", index % 8),
                    dense=dense[offset].tolist(),
                    sparse=SparseVector(unique.tolist(), (counts / (counts + 1.0)).tolist()),
                    payload={"document_id": document_id, "version": "v1", "state": ACTIVE, "chunk_index": index % 8,
                             "text": f"synthetic chunk {index}", "category": CATEGORIES[index % len(CATEGORIES)]},
                )
            )
        store.upsert(points)
    loaded = time.perf_counter() - started
    store.optimize()  # what the service does after an ingest call
    indexed = time.perf_counter() - started - loaded
    where = Where(must=(Match("state", (ACTIVE,)),))
    query_vectors = rng.standard_normal((200, encoder.dimensions)).astype(np.float32)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    sparse_queries = [encoder.sparse_query(query) for query in queries]
    print(f"search at {size:,} chunks (random unit vectors + Zipf-ranked word-piece sparse vectors, not embedded text; "
          f"upsert {loaded:.1f} s, HNSW/optimize {indexed:.1f} s):")
    for mode in ("dense", "hybrid"):
        timings = []
        for round_ in range(2):  # the first round warms caches and is discarded
            timings = []
            for i, vector in enumerate(query_vectors):
                request = VectorQuery(mode, 3, where, dense=vector.tolist(), sparse=sparse_queries[i % len(sparse_queries)],
                                      score_threshold=None, prefetch_limit=40)
                began = time.perf_counter()
                store.query(request)
                timings.append(time.perf_counter() - began)
        print(f"  engine {mode:7s}  {_percentiles(timings)}   (store.query, filter state=active, limit 3)")
    filtered = where.also(Match("category", ("physics",)))
    timings = []
    for vector in query_vectors:
        began = time.perf_counter()
        store.query(VectorQuery("dense", 3, filtered, dense=vector.tolist()))
        timings.append(time.perf_counter() - began)
    print(f"  engine dense+cat {_percentiles(timings)}   (plus category filter, 1/5 of points)")
    service = RetrievalService(settings.retrieval, settings.models, ArtifactStore(str(root / f"store-{size}")), store)
    for mode in ("dense", "hybrid"):
        timings = []
        for query in queries * 2:
            began = time.perf_counter()
            service.search(query, mode=mode, score_threshold=-1.0)
            timings.append(time.perf_counter() - began)
        print(f"  service {mode:6s}  {_percentiles(timings[len(queries):])}   (RetrievalService.search incl. query embedding)")
    service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (2k/10k chunks, 24 ingested chunks)")
    parser.add_argument("--sizes", type=int, nargs="*", help="chunk counts for the latency part")
    parser.add_argument("--ingest-chunks", type=int, help="chunks to ingest for the throughput part")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    sizes = args.sizes or ([2_000, 10_000] if args.quick else [10_000, 100_000])
    ingest_chunks = args.ingest_chunks or (24 if args.quick else 96)

    with tempfile.TemporaryDirectory(prefix="tutorforge-bench-") as tmp:
        root = Path(tmp)
        settings = Settings()
        settings.home = root
        settings.store = str(root / "store")
        settings.retrieval.edge_path = root / "qdrant"
        settings.log_level = "WARNING"
        encoder = Encoder(load_embedder(settings.models), settings.retrieval.embed_batch_size)
        print(f"machine: {os.cpu_count()} CPUs; embedder {settings.models.embedder}; python {sys.version.split()[0]}")
        if not args.skip_ingest:
            bench_ingest(ingest_chunks, settings, encoder)
        queries = [item["query"] for item in read_jsonl(retrieval_queries())]
        for size in sizes:
            bench_latency(size, root, encoder, settings, queries)


if __name__ == "__main__":
    main()
