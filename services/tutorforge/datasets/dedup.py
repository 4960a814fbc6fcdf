"""De-duplication (exact normalised hash, then MinHash LSH near-duplicates) and decontamination
(n-gram overlap with evaluation records)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+", re.UNICODE)
_NUM_PERM = 128
# Shingles of this many words for MinHash: short enough that reworded dialogues still share many.
_SHINGLE = 3
_MAX_LSH_THRESHOLD = 0.9


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def conversation_text(conversation: list[dict[str, Any]]) -> str:
    """The text that identifies a conversation: its user and assistant turns (system prompts are shared
    boilerplate and would make unrelated records look alike)."""
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in conversation if turn["role"] != "system")


def normalized_hash(conversation: list[dict[str, Any]]) -> str:
    """Hash of the conversation with case, punctuation and spacing ignored."""
    canonical = "\n".join(f"{turn['role']}:{' '.join(words(turn['content']))}" for turn in conversation)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _minhash(tokens: list[str]) -> MinHash:
    signature = MinHash(num_perm=_NUM_PERM, seed=1)
    shingles = {" ".join(tokens[i : i + _SHINGLE]) for i in range(max(1, len(tokens) - _SHINGLE + 1))}
    signature.update_batch([shingle.encode("utf-8") for shingle in shingles])
    return signature


@dataclass(frozen=True)
class Duplicate:
    # "exact_duplicate" or "near_duplicate"
    kind: str
    # Position of the kept earlier copy.
    of: int


def find_duplicates(conversations: list[list[dict[str, Any]]], near_threshold: float) -> dict[int, Duplicate]:
    """Position → Duplicate for every conversation that repeats an earlier one (the first copy is kept).

    Exact duplicates by normalised hash; near duplicates by MinHash LSH at Jaccard `near_threshold`
    (>= 1 disables the near pass)."""
    duplicates: dict[int, Duplicate] = {}
    first_by_hash: dict[str, int] = {}
    for position, conversation in enumerate(conversations):
        digest = normalized_hash(conversation)
        if digest in first_by_hash:
            duplicates[position] = Duplicate("exact_duplicate", first_by_hash[digest])
        else:
            first_by_hash[digest] = position
    if near_threshold >= 1:
        return duplicates
    # LSH needs at least two bands, which caps its own threshold; the Jaccard check below applies the real one.
    lsh = MinHashLSH(threshold=min(near_threshold, _MAX_LSH_THRESHOLD), num_perm=_NUM_PERM)
    signatures: dict[int, MinHash] = {}
    for position, conversation in enumerate(conversations):
        if position in duplicates:
            continue
        signature = _minhash(words(conversation_text(conversation)))
        # LSH candidates are probable; confirm with the estimated Jaccard before dropping.
        matches = sorted(
            int(key)
            for key in lsh.query(signature)
            if signatures[int(key)].jaccard(signature) >= near_threshold
        )
        if matches:
            duplicates[position] = Duplicate("near_duplicate", matches[0])
            continue
        signatures[position] = signature
        lsh.insert(str(position), signature)
    return duplicates


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class Decontaminator:
    """Flags records sharing any word n-gram with the evaluation texts."""

    def __init__(self, evaluation_texts: Iterable[str], n: int = 8):
        self.n = n
        self._grams: set[tuple[str, ...]] = set()
        for text in evaluation_texts:
            self._grams |= ngrams(words(text), n)

    def __bool__(self) -> bool:
        return bool(self._grams)

    def overlap(self, conversation: list[dict[str, Any]]) -> str | None:
        grams: set[tuple[str, ...]] = set()
        for turn in conversation:
            if turn["role"] != "system":
                grams |= ngrams(words(turn["content"]), self.n)
        shared = grams & self._grams
        if not shared:
            return None
        example = " ".join(min(shared))
        return f"overlaps the evaluation set ({len(shared)} shared {self.n}-grams, e.g. '{example}')"


def evaluation_texts(item: Any) -> list[str]:
    """Texts of an evaluation record in any of the shapes the evaluation files use."""
    if isinstance(item, str):
        return [item]
    if not isinstance(item, dict):
        return []
    texts = []
    for key in ("conversations", "messages"):
        if isinstance(item.get(key), list):
            texts.extend(str(turn.get("content", "")) for turn in item[key] if isinstance(turn, dict) and turn.get("role") != "system")
    for key in ("question", "query", "instruction", "input", "prompt", "answer", "response", "reference", "expected_response", "text"):
        if isinstance(item.get(key), str):
            texts.append(item[key])
    return texts
