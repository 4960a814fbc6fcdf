"""`ChunkStore` on a Qdrant server through qdrant-client: one collection with a named dense vector
and an IDF-modified sparse vector, keyword payload indexes on every filter field, batched upserts,
and hybrid search as `query_points` with two prefetches fused by RRF."""

from __future__ import annotations

from collections.abc import Sequence

from qdrant_client import QdrantClient, models

from tutorforge.core.settings import RetrievalSettings
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

_UPSERT_BATCH = 256


def _condition(condition: Condition) -> models.FieldCondition:
    if isinstance(condition, Match):
        values = list(condition.values)
        match = models.MatchValue(value=values[0]) if len(values) == 1 else models.MatchAny(any=values)
        return models.FieldCondition(key=condition.key, match=match)
    return models.FieldCondition(
        key=condition.key, range=models.Range(gt=condition.gt, gte=condition.gte, lt=condition.lt, lte=condition.lte)
    )


def _filter(where: Where) -> models.Filter | None:
    if not where.must and not where.must_not:
        return None
    return models.Filter(
        must=[_condition(c) for c in where.must] or None,
        must_not=[_condition(c) for c in where.must_not] or None,
    )


def _sparse(vector) -> models.SparseVector:  # noqa: ANN001 - store.SparseVector
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


class ServerChunkStore:
    backend = "server"

    def __init__(self, client: QdrantClient, collection: str, dimensions: int):
        self._client = client
        self.collection = collection
        if not client.collection_exists(collection):
            client.create_collection(
                collection,
                vectors_config={DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
        self._indexed = set(client.get_collection(collection).payload_schema)
        for key in KEYWORD_FIELDS:
            self.ensure_index(key)

    @classmethod
    def connect(cls, settings: RetrievalSettings, dimensions: int) -> ServerChunkStore:
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        # `location` takes a URL, or ":memory:" for qdrant-client's in-process stand-in (tests).
        return cls(QdrantClient(location=settings.qdrant_url, api_key=api_key), settings.collection, dimensions)

    def ensure_index(self, key: str, numeric: bool = False) -> None:
        if key in self._indexed:
            return
        schema = models.PayloadSchemaType.FLOAT if numeric else models.PayloadSchemaType.KEYWORD
        self._client.create_payload_index(self.collection, key, field_schema=schema, wait=True)
        self._indexed.add(key)

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        for start in range(0, len(points), _UPSERT_BATCH):
            batch = [
                models.PointStruct(
                    id=point.id,
                    vector={DENSE: list(point.dense), SPARSE: _sparse(point.sparse)},
                    payload=point.payload,
                )
                for point in points[start : start + _UPSERT_BATCH]
            ]
            self._client.upsert(self.collection, batch, wait=True)

    def set_state(self, where: Where, state: str) -> None:
        self._client.set_payload(self.collection, {"state": state}, points=models.FilterSelector(filter=_filter(where)), wait=True)

    def delete(self, where: Where) -> None:
        self._client.delete(self.collection, points_selector=models.FilterSelector(filter=_filter(where)), wait=True)

    def query(self, query: VectorQuery) -> list[StoredChunk]:
        where = _filter(query.where)
        if query.mode == "hybrid":
            response = self._client.query_points(
                self.collection,
                prefetch=[
                    models.Prefetch(query=list(query.dense), using=DENSE, filter=where, limit=query.prefetch_limit),
                    models.Prefetch(query=_sparse(query.sparse), using=SPARSE, filter=where, limit=query.prefetch_limit),
                ],
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                query_filter=where,
                limit=query.limit,
                with_payload=True,
            )
        else:
            vector = list(query.dense) if query.mode == "dense" else _sparse(query.sparse)
            response = self._client.query_points(
                self.collection,
                query=vector,
                using=DENSE if query.mode == "dense" else SPARSE,
                query_filter=where,
                limit=query.limit,
                score_threshold=query.score_threshold,
                with_payload=True,
            )
        return [StoredChunk(str(point.id), point.payload or {}, point.score) for point in response.points]

    def scroll(self, where: Where, limit: int) -> list[StoredChunk]:
        found: list[StoredChunk] = []
        offset = None
        while len(found) < limit:
            records, offset = self._client.scroll(
                self.collection, scroll_filter=_filter(where), limit=min(limit - len(found), 1000), offset=offset, with_payload=True
            )
            found.extend(StoredChunk(str(record.id), record.payload or {}) for record in records)
            if offset is None:
                break
        return found

    def count(self, where: Where) -> int:
        return self._client.count(self.collection, count_filter=_filter(where), exact=True).count

    def optimize(self) -> None:
        """Nothing to do: a Qdrant server runs its optimizers by itself."""

    def close(self) -> None:
        self._client.close()
