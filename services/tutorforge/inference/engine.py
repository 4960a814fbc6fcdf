"""The engine interface: every backend (embedded, tgi, openai) generates, streams and manages adapters
through these few methods, so the service, the gRPC servicer and the HTTP door never branch on it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tutorforge.core.settings import Settings
from tutorforge.inference.types import GenerationRequest, GenerationStream


class Engine(Protocol):
    # "embedded", "tgi" or "openai".
    kind: str
    # Identity of the base model (what adapters must have been trained on).
    base_model: str
    # The engine loads adapters itself on first use (embedded); remote engines serve what they were given.
    loads_from_registry: bool

    def submit(self, request: GenerationRequest) -> GenerationStream:
        """Validate and enqueue; raises InvalidArgument / ResourceExhausted at once, never blocks."""
        ...

    def load_adapter(self, name: str, path: Path) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def loaded_adapters(self) -> list[str]: ...

    def close(self) -> None: ...


def create_engine(settings: Settings) -> Engine:
    kind = settings.inference.engine
    if kind == "embedded":
        from tutorforge.inference.embedded import EmbeddedEngine

        return EmbeddedEngine(settings)
    if kind == "tgi":
        from tutorforge.inference.remote import TgiEngine

        return TgiEngine(settings)
    from tutorforge.inference.remote import OpenAIEngine

    return OpenAIEngine(settings)
