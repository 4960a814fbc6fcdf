"""Dense and sparse vectors for chunks and queries.

Dense: the shared sentence-transformers embedder, batched, L2-normalized (cosine).
Sparse (BM25-style): the term frequencies of the embedder tokenizer's ids, saturated with BM25's
k1/b and normalized by chunk length; IDF comes from Qdrant (`Modifier.IDF` on the sparse vector),
which keeps it right as documents come and go. A query's sparse vector weighs each term 1."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tutorforge.core.telemetry import tracing
from tutorforge.retrieval.store import SparseVector

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BM25_K1 = 1.2
BM25_B = 0.75
# Function words carry no topic; leaving them out keeps the sparse vectors short.
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i if in into is it its of on or our she that the "
    "their them then there these they this to was we were what when where which who why will with you your".split()
)
_window_lock = threading.Lock()


class Encoder:
    def __init__(self, embedder: SentenceTransformer, batch_size: int = 64):
        self.embedder = embedder
        self.tokenizer = embedder.tokenizer
        self.batch_size = batch_size
        self.dimensions = int(embedder.get_embedding_dimension())
        # The model's full position window (512 for MiniLM), not sentence-transformers' default
        # truncation (256): chunks are sized to it and must be embedded whole.
        self.window = int(getattr(embedder[0].auto_model.config, "max_position_embeddings", embedder.max_seq_length))
        with _window_lock:
            if embedder.max_seq_length < self.window:
                embedder.max_seq_length = self.window
        vocabulary = self.tokenizer.get_vocab()
        self.ignored_ids = frozenset(
            token_id
            for token, token_id in vocabulary.items()
            if token in _STOPWORDS or not any(char.isalnum() for char in token) or token_id in self.tokenizer.all_special_ids
        )

    def dense(self, texts: Sequence[str]) -> np.ndarray:
        with tracing.span("embed", {"tutorforge.embed.texts": len(texts)}):
            return self.embedder.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )

    def sparse_document(self, token_ids: Sequence[int], average_length: float) -> SparseVector:
        counts = Counter(token for token in token_ids if token not in self.ignored_ids)
        length_norm = BM25_K1 * (1 - BM25_B + BM25_B * len(token_ids) / max(average_length, 1.0))
        indices = sorted(counts)
        values = [counts[i] * (BM25_K1 + 1) / (counts[i] + length_norm) for i in indices]
        return SparseVector(indices, values)

    def sparse_query(self, query: str) -> SparseVector:
        ids = self.tokenizer(query, add_special_tokens=False)["input_ids"]
        indices = sorted({token for token in ids if token not in self.ignored_ids})
        return SparseVector(indices, [1.0] * len(indices))
