"""Calibrates the tutor chat's dense score threshold (`inference.chat_score_threshold`) for the embedder.

Ingests the bundled material into a throwaway embedded Qdrant engine, then compares the top-1 dense scores
of the labelled queries (samples/retrieval_queries.jsonl: the material answers them) with those of
off-topic questions (the material answers none). Prints both distributions and the threshold that keeps
every labelled query's relevant passage while refusing the most off-topic ones.

    python bench/chat_threshold.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

OFF_TOPIC = (
    "What is the capital city of Australia?",
    "How do I bake sourdough bread at home?",
    "Who won the football world cup in 1998?",
    "What is a good name for a golden retriever puppy?",
    "How do I change a flat tyre on a bicycle?",
    "Which programming language should I learn to build iPhone games?",
    "What's the best way to learn to play the guitar?",
    "How many calories are in a banana?",
    "Can you recommend a good science fiction novel?",
    "How do I tie a tie?",
    "What time zone is Tokyo in?",
    "How do airplanes stay in the air?",
    "What are the rules of chess castling?",
    "How do I make my houseplants grow faster?",
    "Who painted the Mona Lisa?",
    "How do vaccines train the immune system?",
    "What is the plot of Romeo and Juliet?",
    "How do I save money for a holiday?",
    "Why is the sky blue?",
    "What does a stock market index measure?",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    from tutorforge.artifacts.store import ArtifactStore
    from tutorforge.core.settings import Settings
    from tutorforge.retrieval.documents import DocumentMetadata
    from tutorforge.retrieval.service import DocumentUpload, RetrievalService
    from tutorforge.samples import material_documents, read_jsonl, retrieval_queries

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), store=str(Path(home) / "store"))
        service = RetrievalService(settings.retrieval, settings.models, ArtifactStore(settings.store))
        service.ingest(
            DocumentUpload(
                d.document_id,
                d.path.name,
                metadata=DocumentMetadata(source=d.source, category=d.category, topic=d.topic, extra=d.extra),
                content=bytearray(d.path.read_bytes()),
                size=d.path.stat().st_size,
            )
            for d in material_documents()
        )
        labelled = []
        for item in read_jsonl(retrieval_queries()):
            hits = service.search(item["query"], limit=3, score_threshold=-1.0, mode="dense")
            relevant = [h.score for h in hits if h.document_id in item["relevant"]]
            labelled.append(max(relevant) if relevant else 0.0)
        off_topic = [service.search(q, limit=1, score_threshold=-1.0, mode="dense")[0].score for q in OFF_TOPIC]
    lowest_relevant = min(labelled)
    # Midway between the weakest relevant passage and the strongest off-topic one, but never above the
    # weakest relevant score: citing an answerable question matters more than refusing an odd one.
    threshold = math.floor(100 * min(lowest_relevant, (lowest_relevant + max(off_topic)) / 2)) / 100
    result = {
        "labelled_queries": len(labelled),
        "relevant_top_score": {"min": lowest_relevant, "median": statistics.median(labelled)},
        "off_topic_top_score": {"max": max(off_topic), "median": statistics.median(off_topic)},
        "threshold": threshold,
        "labelled_kept": sum(score >= threshold for score in labelled) / len(labelled),
        "off_topic_refused": sum(score < threshold for score in off_topic) / len(off_topic),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
