"""What every service of one server process shares: settings, the artifact store, SDK connections to the
other services, and shutdown hooks. Services keep no state of their own beyond caches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import cached_property

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.client.connection import Connection
from tutorforge.core.access import internal_token
from tutorforge.core.settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._connections: dict[str, Connection] = {}
        self._shutdown_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @cached_property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.store_url)

    def connection(self, service: str) -> Connection:
        """A shared SDK connection to another service (or this server itself when all run in one process),
        with the internal token and the SDK's deadlines, retries and domain errors: wrap it in the
        service's client (tutorforge.client)."""
        with self._lock:
            if service not in self._connections:
                self._connections[service] = Connection(
                    self.settings.address_of(service),
                    token=internal_token(self.settings.server),
                    tls=self.settings.tls,
                    max_message_bytes=self.settings.server.max_message_bytes,
                )
            return self._connections[service]

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        self._shutdown_hooks.append(hook)

    def close(self) -> None:
        for hook in reversed(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                log.exception("shutdown hook failed")
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
