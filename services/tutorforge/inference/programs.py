"""The hook through which optimized chat programs (built by the optimization service) answer a chat.

An optimized DSPy program boils down, for serving, to an instruction and a few demonstrations. The
optimization package implements `ChatProgramResolver` in `tutorforge.optimization.programs` as
`chat_program_resolver(store) -> ChatProgramResolver`; when that module is absent, chats that name a
program are refused with FAILED_PRECONDITION."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Protocol

from tutorforge.core.storage import ArtifactStore

RESOLVER_MODULE = "tutorforge.optimization.programs"
RESOLVER_FACTORY = "chat_program_resolver"


@dataclass
class ChatProgram:
    name: str
    # Replaces the default tutor system prompt.
    instructions: str
    # Example turns (ChatML dicts) placed between the system prompt and the conversation.
    demonstrations: list[dict[str, str]] = field(default_factory=list)
    # Adapter the program was optimized with; empty = whatever the request names.
    adapter: str = ""


class ChatProgramResolver(Protocol):
    def resolve(self, name: str) -> ChatProgram:
        """The program called `name`; raises NotFound when there is none."""
        ...


def load_program_resolver(store: ArtifactStore) -> ChatProgramResolver | None:
    """The optimization package's resolver when it is installed (imported on first use: it pulls DSPy)."""
    if importlib.util.find_spec(RESOLVER_MODULE.rsplit(".", 1)[0]) is None or importlib.util.find_spec(RESOLVER_MODULE) is None:
        return None
    return _LazyResolver(store)


class _LazyResolver:
    def __init__(self, store: ArtifactStore):
        self._store = store
        self._resolver: ChatProgramResolver | None = None

    def resolve(self, name: str) -> ChatProgram:
        if self._resolver is None:
            self._resolver = getattr(importlib.import_module(RESOLVER_MODULE), RESOLVER_FACTORY)(self._store)
        return self._resolver.resolve(name)
