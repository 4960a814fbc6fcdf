"""The one small interface the retrieval service needs from a vector store, and its data types.

Two implementations: `EdgeChunkStore` (Qdrant's engine in process, the default) and
`ServerChunkStore` (a Qdrant server through qdrant-client). Both hold one point per chunk with a
named dense vector ("dense", cosine) and a named sparse vector ("sparse", IDF-weighted by Qdrant)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tutorforge.core.settings import RetrievalSettings

DENSE = "dense"
SPARSE = "sparse"
SearchMode = Literal["dense", "sparse", "hybrid"]

# Payload fields with a keyword index (the filterable seed schema plus bookkeeping fields).
KEYWORD_FIELDS = ("document_id", "version", "state", "text_hash", "source", "category", "topic")

# Chunk lifecycle: written as "staged" (invisible), switched to "active" (searchable), "retired"
# just before deletion. Searches only ever see "active" chunks.
STAGED, ACTIVE, RETIRED = "staged", "active", "retired"


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Match:
    """Payload `key` equals one of `values` (one value = exact match)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


Condition = Match | Range


@dataclass(frozen=True)
class Where:
    """A conjunction of conditions, minus `must_not` ones."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def also(self, *conditions: Condition) -> Where:
        return Where(self.must + conditions, self.must_not)


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredChunk:
    id: str
    payload: dict[str, Any]
    score: float = 0.0


@dataclass(frozen=True)
class VectorQuery:
    mode: SearchMode
    limit: int
    where: Where
    dense: Sequence[float] | None = None
    sparse: SparseVector | None = None
    score_threshold: float | None = None
    # Candidates each prefetch contributes to hybrid fusion.
    prefetch_limit: int = 50


class ChunkStore(Protocol):
    """What the retrieval service needs from Qdrant. Writes are visible to reads when they return."""

    backend: str

    def upsert(self, points: Sequence[ChunkPoint]) -> None: ...

    def set_state(self, where: Where, state: str) -> None:
        """Set the `state` payload of every point matching `where`."""

    def delete(self, where: Where) -> None: ...

    def query(self, query: VectorQuery) -> list[StoredChunk]: ...

    def scroll(self, where: Where, limit: int) -> list[StoredChunk]:
        """Up to `limit` points matching `where`, with payload, in id order."""

    def count(self, where: Where) -> int: ...

    def ensure_index(self, key: str, numeric: bool = False) -> None:
        """A payload index on `key` (keyword, or float when `numeric`)."""

    def optimize(self) -> None:
        """Bring indexes up to date after a batch of writes (merge segments, build HNSW)."""

    def close(self) -> None: ...


def open_chunk_store(settings: RetrievalSettings, dimensions: int) -> ChunkStore:
    if settings.backend == "server":
        from tutorforge.retrieval.server_store import ServerChunkStore

        return ServerChunkStore.connect(settings, dimensions)
    from tutorforge.retrieval.edge_store import EdgeChunkStore

    return EdgeChunkStore.open(settings.edge_path / settings.collection, dimensions)
