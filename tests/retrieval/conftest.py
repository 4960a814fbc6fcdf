"""Retrieval fixtures: a retrieval server with small chunks (embedding is the slow part on a 2-core
machine, so tests keep chunks short and documents few)."""

from __future__ import annotations

import pytest
from retrieval_helpers import LIBRARY, SMALL_CHUNKS, upload

from tutorforge.v1 import retrieval_pb2 as pb
from tutorforge.v1 import retrieval_pb2_grpc


@pytest.fixture
def retrieval(serve):
    """Start a retrieval server (small chunks unless overridden); returns (stub, running server)."""

    def _start(**changes: object):
        running, channel = serve("retrieval", **{**SMALL_CHUNKS, **changes})
        return retrieval_pb2_grpc.RetrievalServiceStub(channel), running

    return _start


@pytest.fixture
def library(retrieval):
    """A running server with the four small documents ingested."""
    stub, running = retrieval()
    response = stub.IngestDocuments(iter(upload(*LIBRARY)))
    assert [r.outcome for r in response.results] == [pb.INGEST_OUTCOME_CREATED] * 4, response
    return stub, running
