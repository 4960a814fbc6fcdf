"""Both ChunkStore backends through the one interface: the embedded Qdrant engine (qdrant-edge) and
the server backend. No Qdrant server binary exists here, so the server backend runs on qdrant-client's
`location=":memory:"` mode: the same client calls (collection, payload indexes, batched upserts,
query_points with prefetch + RRF, filter selectors) that it sends to a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from tutorforge.retrieval.edge_store import EdgeChunkStore
from tutorforge.retrieval.server_store import ServerChunkStore
from tutorforge.retrieval.store import ACTIVE, RETIRED, STAGED, ChunkPoint, Match, Range, SparseVector, VectorQuery, Where

DIMS = 16
# qdrant-client warns that local mode ignores payload indexes; the server backend still creates them.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path: Path):
    if request.param == "edge":
        chunk_store = EdgeChunkStore.open(tmp_path / "edge", DIMS)
    else:
        chunk_store = ServerChunkStore(QdrantClient(location=":memory:"), "chunks", DIMS)
    yield chunk_store
    chunk_store.close()


def _unit(vector: np.ndarray) -> list[float]:
    return (vector / np.linalg.norm(vector)).tolist()


def _points(count: int, document_id: str, version: str = "v1", state: str = ACTIVE, seed: int = 0) -> list[ChunkPoint]:
    rng = np.random.default_rng(seed)
    return [
        ChunkPoint(
            id=f"00000000-0000-0000-{seed:04d}-{index:012d}",
            dense=_unit(rng.standard_normal(DIMS)),
            # Term 1000+index is unique to each chunk; term 7 is in every chunk.
            sparse=SparseVector([7, 1000 + index], [1.0, 2.0]),
            payload={"document_id": document_id, "version": version, "state": state, "chunk_index": index,
                     "category": "odd" if index % 2 else "even", "extra_num": {"grade": float(index)}},
        )
        for index in range(count)
    ]


def test_upsert_count_scroll_and_filters(store):
    store.upsert(_points(10, "a"))
    store.ensure_index("extra_num.grade", numeric=True)
    assert store.count(Where()) == 10
    assert store.count(Where(must=(Match("category", ("odd",)),))) == 5
    assert store.count(Where(must=(Match("category", ("odd", "even")),))) == 10
    assert store.count(Where(must=(Range("extra_num.grade", gte=3, lt=6),))) == 3
    assert store.count(Where(must_not=(Match("category", ("odd",)),))) == 5
    scrolled = store.scroll(Where(must=(Match("category", ("even",)),)), limit=3)
    assert len(scrolled) == 3 and all(chunk.payload["category"] == "even" for chunk in scrolled)


def test_dense_sparse_and_hybrid_queries(store):
    points = _points(20, "a")
    store.upsert(points)
    target = points[5]
    where = Where(must=(Match("state", (ACTIVE,)),))
    dense = store.query(VectorQuery("dense", 3, where, dense=target.dense))
    assert dense[0].id == target.id and dense[0].score == pytest.approx(1.0, abs=1e-4)
    sparse = store.query(VectorQuery("sparse", 3, where, sparse=SparseVector([1005], [1.0])))
    assert [hit.id for hit in sparse] == [target.id]
    hybrid = store.query(VectorQuery("hybrid", 3, where, dense=target.dense, sparse=SparseVector([1005], [1.0])))
    assert hybrid[0].id == target.id and len(hybrid) == 3
    # The threshold drops everything but the exact match (random 16-d vectors are far apart).
    assert [hit.id for hit in store.query(VectorQuery("dense", 5, where, dense=target.dense, score_threshold=0.99))] == [target.id]
    odd_only = store.query(VectorQuery("dense", 20, where.also(Match("category", ("odd",))), dense=target.dense))
    assert len(odd_only) == 10 and all(hit.payload["category"] == "odd" for hit in odd_only)


def test_state_switch_and_delete_by_filter(store):
    store.upsert(_points(4, "doc", version="old"))
    store.upsert(_points(3, "doc", version="new", state=STAGED, seed=1))
    active = Where(must=(Match("state", (ACTIVE,)),))
    assert store.count(active) == 4
    old = Where(must=(Match("document_id", ("doc",)),), must_not=(Match("version", ("new",)),))
    store.set_state(old, RETIRED)
    store.set_state(Where(must=(Match("document_id", ("doc",)), Match("version", ("new",)))), ACTIVE)
    assert {chunk.payload["version"] for chunk in store.scroll(active, 100)} == {"new"}
    store.delete(old)
    assert store.count(Where()) == 3


def test_edge_store_persists_across_reopen(tmp_path: Path):
    store = EdgeChunkStore.open(tmp_path / "edge", DIMS)
    store.upsert(_points(5, "a"))
    store.close()
    reopened = EdgeChunkStore.open(tmp_path / "edge", DIMS)
    try:
        assert reopened.count(Where(must=(Match("document_id", ("a",)),))) == 5
    finally:
        reopened.close()
