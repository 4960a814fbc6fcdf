"""Per-request text handling while tokens stream: incremental detokenization and stop strings."""

from __future__ import annotations

from typing import Any


class IncrementalDecoder:
    """Turns token ids into text deltas as they arrive.

    Byte-level BPE tokens may end mid-character, and a token's leading space depends on its neighbours, so
    each step decodes a short window (from the last safe offset) and emits only the stable new suffix —
    the method used by TGI and vLLM."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self._tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        text = decode(self._ids[self._prefix_offset :], skip_special_tokens=True)
        if len(text) > len(prefix) and (final or not text.endswith("\ufffd")):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return text[len(prefix) :]
        return ""


class StopMatcher:
    """Cuts the text at the first stop string; holds back a tail that could still become one."""

    def __init__(self, stops: tuple[str, ...]):
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text that is safe to emit now; sets `stopped` when a stop string appeared."""
        if not self._stops:
            return delta
        text = self._pending + delta
        cut = min((index for stop in self._stops if (index := text.find(stop)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:size]):
                    hold = size
                    break
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text
