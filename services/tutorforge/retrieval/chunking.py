"""Sentence-aware chunking by tokens of the embedder's tokenizer.

Text is cut into units at sentence ends, blank lines and Markdown block starts; units are packed
greedily into chunks of at most `size` tokens (the embedder's [CLS]/[SEP] included, so a chunk
fits the model's window exactly), and each chunk starts with the last whole units of the previous
one that fit into `overlap` tokens. A unit longer than a chunk is the only thing ever cut mid-sentence.
A chunk's text is a slice of the original text, so its formatting is kept."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tutorforge.core.errors import InvalidArgument

# Ends of sentences (with closing quotes/brackets), and line starts of Markdown blocks or paragraphs.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s)")
_BLOCK_START = re.compile(r"\n(?=[ \t]*(?:\n|#{1,6}\s|[-*+>|]\s|\d+[.)]\s))")
_SPECIAL_TOKENS = 2


@dataclass(frozen=True)
class ChunkingOptions:
    size: int
    overlap: int

    def validate(self, window: int) -> ChunkingOptions:
        if self.size <= _SPECIAL_TOKENS + 8:
            raise InvalidArgument(f"options.chunk_size_tokens must be more than {_SPECIAL_TOKENS + 8}, got {self.size}")
        if self.size > window:
            raise InvalidArgument(
                f"options.chunk_size_tokens={self.size} exceeds the embedder's window of {window} tokens; use at most {window}"
            )
        if self.overlap < 0 or self.overlap >= self.size // 2:
            raise InvalidArgument(
                f"options.chunk_overlap_tokens must be between 0 and half the chunk size ({self.size // 2 - 1}), got {self.overlap}"
            )
        return self


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    # Token ids of the text without special tokens (they also make the chunk's sparse vector).
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    ids: tuple[int, ...]


def unit_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences and blocks of `text`, whitespace trimmed."""
    cuts = {0, len(text)}
    cuts.update(match.end() for match in _SENTENCE_END.finditer(text))
    cuts.update(match.start() for match in _BLOCK_START.finditer(text))
    ordered = sorted(cuts)
    spans = []
    for start, end in zip(ordered, ordered[1:]):
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            left = start + (len(piece) - len(piece.lstrip()))
            spans.append((left, left + len(stripped)))
    return spans


def chunk_text(text: str, tokenizer, options: ChunkingOptions) -> list[Chunk]:  # noqa: ANN001 - HF tokenizer
    budget = options.size - _SPECIAL_TOKENS
    spans = unit_spans(text)
    if not spans:
        return []
    encoded = tokenizer([text[s:e] for s, e in spans], add_special_tokens=False, return_offsets_mapping=True)
    units: list[_Unit] = []
    for (start, end), ids, offsets in zip(spans, encoded["input_ids"], encoded["offset_mapping"]):
        if len(ids) <= budget:
            units.append(_Unit(start, end, tuple(ids)))
            continue
        # Unavoidable: a sentence longer than a chunk is cut at token boundaries.
        for first in range(0, len(ids), budget):
            window = offsets[first : first + budget]
            units.append(_Unit(start + window[0][0], start + window[-1][1], tuple(ids[first : first + budget])))
    units = [unit for unit in units if unit.ids]

    chunks: list[Chunk] = []
    first = 0
    while first < len(units):
        last, used = first, 0
        while last < len(units) and used + len(units[last].ids) <= budget:
            used += len(units[last].ids)
            last += 1
        members = units[first:last]
        chunks.append(
            Chunk(
                index=len(chunks),
                text=text[members[0].start : members[-1].end],
                token_ids=tuple(token for unit in members for token in unit.ids),
            )
        )
        if last >= len(units):
            break
        # Overlap: step back over whole trailing units that fit, always moving forward.
        next_first, carried = last, 0
        while next_first - 1 > first and carried + len(units[next_first - 1].ids) <= options.overlap:
            next_first -= 1
            carried += len(units[next_first].ids)
        first = next_first
    return chunks
