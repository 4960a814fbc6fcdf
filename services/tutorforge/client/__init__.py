"""tutorforge's typed client SDK: one client per service over one connection policy (API token, TLS,
deadlines per kind of call, retries with backoff, domain errors), job handles to watch and wait, and
asyncio variants for streaming (tutorforge.client.aio). See docs/client.md.

    from tutorforge.client import Tutorforge

    with Tutorforge("127.0.0.1:50051") as tf:
        tf.retrieval.ingest(["fractions.md"], category="math")
        reply = tf.inference.chat("Why can't I add the denominators?")
"""

from __future__ import annotations

from typing import Any, Self

from tutorforge.client.connection import DEADLINES, DEFAULT_ADDRESS, NO_RETRY, Connection, RetryPolicy
from tutorforge.client.datasets import (
    DatasetsClient,
    document_source,
    file_source,
    record_file,
    seed_source,
    synthetic_source,
)
from tutorforge.client.inference import InferenceClient
from tutorforge.client.jobs import JobFailed, JobHandle, state_name
from tutorforge.client.optimization import OptimizationClient
from tutorforge.client.retrieval import Document, RetrievalClient
from tutorforge.client.training import TrainingClient
from tutorforge.core.errors import (
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TutorforgeError,
    Unauthenticated,
    Unavailable,
)
from tutorforge.core.settings import SERVICE_NAMES, Settings


class Tutorforge:
    """Every service's client: `retrieval`, `datasets`, `training`, `optimization`, `inference`.

    One address for all (`tutorforge serve all`), or `from_settings()` for one per service as configured."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, connections: dict[str, Connection] | None = None, **options: Any):
        self._connections = connections or dict.fromkeys(SERVICE_NAMES, Connection(address, **options))
        self.retrieval = RetrievalClient(self._connections["retrieval"])
        self.datasets = DatasetsClient(self._connections["datasets"])
        self.training = TrainingClient(self._connections["training"])
        self.optimization = OptimizationClient(self._connections["optimization"])
        self.inference = InferenceClient(self._connections["inference"])

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **options: Any) -> Tutorforge:
        """Each service at its configured address (`addresses.<service>`), with the settings' token and TLS."""
        settings = settings or Settings()
        by_address: dict[str, Connection] = {}
        connections = {}
        for service in SERVICE_NAMES:
            address = settings.address_of(service)
            if address not in by_address:
                by_address[address] = Connection.from_settings(settings, service, **options)
            connections[service] = by_address[address]
        return cls(connections=connections)

    def close(self) -> None:
        for connection in {id(c): c for c in self._connections.values()}.values():
            connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


__all__ = [
    "DEADLINES", "NO_RETRY", "AlreadyExists", "Cancelled", "Connection", "DatasetsClient", "Document", "FailedPrecondition",
    "InferenceClient", "InvalidArgument", "JobFailed", "JobHandle", "NotFound", "OptimizationClient", "ResourceExhausted",
    "RetrievalClient", "RetryPolicy", "TrainingClient", "Tutorforge", "TutorforgeError", "Unauthenticated", "Unavailable",
    "document_source", "file_source", "record_file", "seed_source", "state_name", "synthetic_source",
]
