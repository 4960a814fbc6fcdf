"""What every service of one server process shares: settings, the artifact store, channels to the
other services, and shutdown hooks. Services keep no state of their own beyond caches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import cached_property

import grpc

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.access import internal_token
from tutorforge.core.client import open_channel
from tutorforge.core.settings import Settings

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._channels: dict[str, grpc.Channel] = {}
        self._shutdown_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @cached_property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.settings.store_url)

    def channel(self, service: str) -> grpc.Channel:
        """A shared channel to another service (or this server itself when all run in one process)."""
        with self._lock:
            if service not in self._channels:
                self._channels[service] = open_channel(
                    self.settings.address_of(service),
                    internal_token(self.settings.server),
                    max_message_bytes=self.settings.server.max_message_bytes,
                    tls=self.settings.tls,
                )
            return self._channels[service]

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        self._shutdown_hooks.append(hook)

    def close(self) -> None:
        for hook in reversed(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                log.exception("shutdown hook failed")
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
