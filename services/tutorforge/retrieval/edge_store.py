"""`ChunkStore` on qdrant-edge: Qdrant's Rust engine in this process (HNSW, payload indexes, sparse
vectors with IDF, prefetch + RRF), persisted in a local folder with a write-ahead log.

Edge shards do not optimize on their own: the service calls `optimize()` after each ingest/delete
call. It merges segments and builds the HNSW index once enough unindexed points piled up (a no-op
otherwise). qdrant-edge 0.9.0 holds the GIL during `optimize()`, so it must not run in a background
thread of a serving process: other calls wait for it either way, and this way only when an ingest
has just added thousands of chunks (whose embedding took far longer than indexing them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import qdrant_edge as edge

from tutorforge.retrieval.store import (
    DENSE,
    KEYWORD_FIELDS,
    SPARSE,
    ChunkPoint,
    Condition,
    Match,
    StoredChunk,
    VectorQuery,
    Where,
)

_RRF_K = 60


def _condition(condition: Condition) -> edge.FieldCondition:
    if isinstance(condition, Match):
        values = list(condition.values)
        match = edge.MatchValue(values[0]) if len(values) == 1 else edge.MatchAny(values)
        return edge.FieldCondition(condition.key, match=match)
    return edge.FieldCondition(
        condition.key, range=edge.RangeFloat(gte=condition.gte, gt=condition.gt, lte=condition.lte, lt=condition.lt)
    )


def _filter(where: Where) -> edge.Filter | None:
    if not where.must and not where.must_not:
        return None
    return edge.Filter(
        must=[_condition(c) for c in where.must] or None,
        must_not=[_condition(c) for c in where.must_not] or None,
    )


def _sparse(vector) -> edge.SparseVector:  # noqa: ANN001 - store.SparseVector
    return edge.SparseVector(list(vector.indices), list(vector.values))


class EdgeChunkStore:
    backend = "edge"

    def __init__(self, shard: edge.EdgeShard, path: Path):
        self._shard = shard
        self.path = path
        self._indexed = set(shard.info().payload_schema)

    @classmethod
    def open(cls, path: Path, dimensions: int) -> EdgeChunkStore:
        path = Path(path)
        config = edge.EdgeConfig(
            vectors={DENSE: edge.EdgeVectorParams(size=dimensions, distance=edge.Distance.Cosine)},
            sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        )
        if (path / "edge_config.json").exists():
            shard = edge.EdgeShard.load(str(path), config)
        else:
            path.mkdir(parents=True, exist_ok=True)
            shard = edge.EdgeShard.create(str(path), config)
        store = cls(shard, path)
        for key in KEYWORD_FIELDS:
            store.ensure_index(key)
        return store

    def ensure_index(self, key: str, numeric: bool = False) -> None:
        if key in self._indexed:
            return
        schema = edge.PayloadSchemaType.Float if numeric else edge.PayloadSchemaType.Keyword
        self._shard.update(edge.UpdateOperation.create_field_index(key, schema))
        self._indexed.add(key)

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        batch = [
            edge.Point(point.id, {DENSE: list(point.dense), SPARSE: _sparse(point.sparse)}, point.payload)
            for point in points
        ]
        if batch:
            self._shard.update(edge.UpdateOperation.upsert_points(batch))

    def set_state(self, where: Where, state: str) -> None:
        self._shard.update(edge.UpdateOperation.set_payload_by_filter(_filter(where), {"state": state}))

    def delete(self, where: Where) -> None:
        self._shard.update(edge.UpdateOperation.delete_points_by_filter(_filter(where)))

    def query(self, query: VectorQuery) -> list[StoredChunk]:
        where = _filter(query.where)
        dense = edge.Query.Nearest(list(query.dense), using=DENSE) if query.dense is not None else None
        sparse = edge.Query.Nearest(_sparse(query.sparse), using=SPARSE) if query.sparse is not None else None
        if query.mode == "hybrid":
            request = edge.QueryRequest(
                limit=query.limit,
                prefetches=[
                    edge.Prefetch(limit=query.prefetch_limit, query=dense, filter=where),
                    edge.Prefetch(limit=query.prefetch_limit, query=sparse, filter=where),
                ],
                query=edge.Fusion.Rrf(k=_RRF_K),
                filter=where,
                with_payload=True,
            )
        else:
            request = edge.QueryRequest(
                limit=query.limit,
                query=dense if query.mode == "dense" else sparse,
                filter=where,
                score_threshold=query.score_threshold,
                with_payload=True,
            )
        return [StoredChunk(str(point.id), point.payload or {}, point.score) for point in self._shard.query(request)]

    def scroll(self, where: Where, limit: int) -> list[StoredChunk]:
        found: list[StoredChunk] = []
        offset = None
        while len(found) < limit:
            records, offset = self._shard.scroll(
                edge.ScrollRequest(offset=offset, limit=min(limit - len(found), 1000), filter=_filter(where), with_payload=True)
            )
            found.extend(StoredChunk(str(record.id), record.payload or {}) for record in records)
            if offset is None:
                break
        return found

    def count(self, where: Where) -> int:
        return self._shard.count(edge.CountRequest(exact=True, filter=_filter(where)))

    def optimize(self) -> None:
        self._shard.optimize()

    def close(self) -> None:
        self._shard.flush()
        self._shard.close()
