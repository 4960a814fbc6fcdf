"""Dataset generation yield: how many usable Socratic dialogues synthetic and grounded generation give
per attempt with the served model (default: the embedded SmolLM2-135M-Instruct), through the real
DatasetService on a loopback server.

    python bench/dataset_yield.py                  # 6 synthetic + 6 grounded attempts, 1 exchange each
    python bench/dataset_yield.py --attempts 3 --exchanges 2
    python bench/dataset_yield.py --teacher http://127.0.0.1:8000/v1   # generate through a teacher

"Usable" = kept by the build (parsed, not a loop, grounded where it must be) and every tutor turn ends
with a question and reveals no final answer (core.pedagogy). Attempts = dialogues tried (synthetic
tries up to twice the number asked for) / document chunks used (the sample topic may have fewer chunks)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tutorforge import samples  # noqa: E402
from tutorforge.artifacts.datasets import DatasetRepository  # noqa: E402
from tutorforge.core.client import open_channel  # noqa: E402
from tutorforge.core.pedagogy import reveals_answer  # noqa: E402
from tutorforge.core.server import start_server  # noqa: E402
from tutorforge.core.settings import Settings  # noqa: E402
from tutorforge.v1 import common_pb2, datasets_pb2, datasets_pb2_grpc, jobs_pb2, retrieval_pb2, retrieval_pb2_grpc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def usable(record: dict) -> bool:
    tutor = [t["content"] for t in record["conversations"] if t["role"] == "assistant"]
    return bool(tutor) and all(t.rstrip().endswith("?") and not reveals_answer(t) for t in tutor)


def ingest(channel, topic: str) -> None:
    document = next(d for d in samples.material_documents() if d.topic == topic)
    requests = [
        retrieval_pb2.IngestDocumentsRequest(document=retrieval_pb2.DocumentHeader(
            document_id=document.document_id, filename=document.path.name,
            metadata=retrieval_pb2.DocumentMetadata(source=document.source, category=document.category, topic=document.topic))),
        retrieval_pb2.IngestDocumentsRequest(content=document.path.read_bytes()),
    ]
    retrieval_pb2_grpc.RetrievalServiceStub(channel).IngestDocuments(iter(requests), timeout=300)


def build(stub, repository: DatasetRepository, name: str, source: datasets_pb2.DatasetSource) -> dict:
    started = time.perf_counter()
    job = stub.CreateDataset(datasets_pb2.CreateDatasetRequest(
        name=name, sources=[source], options=datasets_pb2.BuildOptions(validation_fraction=0.0))).job
    for _ in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=3600):
        pass
    job = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job.id)).job
    seconds = time.perf_counter() - started
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        return {"error": job.error, "seconds": round(seconds, 1)}
    info = stub.GetDataset(datasets_pb2.GetDatasetRequest(name=name)).dataset
    records = [r for split in ("train", "validation") for r in repository.records(name, "", split)]
    return {
        "attempts": sum(s.records_read for s in info.manifest.sources),
        "kept": len(records),
        "usable": sum(usable(r) for r in records),
        "dropped": dict(Counter(d.reason.split(":")[0][:60] for d in info.manifest.dropped)),
        "seconds": round(seconds, 1),
        "examples": [r["conversations"][-2:] for r in records[:2]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=6)
    parser.add_argument("--exchanges", type=int, default=1)
    parser.add_argument("--topic", default="fractions")
    parser.add_argument("--teacher", default="", help="teacher endpoint for the sources (needs the teacher field)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tutorforge-yield-"))
    settings = Settings()
    settings.home = root
    settings.store = str(root / "store")
    settings.models.cache_dir = REPO / ".cache" / "models"
    settings.retrieval.edge_path = root / "qdrant"
    running = start_server(settings, ("datasets", "inference", "retrieval"), port=0)
    channel = open_channel(running.address)
    try:
        ingest(channel, args.topic)
        stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        repository = DatasetRepository(running.runtime.store)
        teacher = {"teacher": args.teacher} if args.teacher else {}
        synthetic = datasets_pb2.SyntheticSource(
            topic=args.topic, num_conversations=args.attempts, num_exchanges=args.exchanges, **teacher)
        documents = datasets_pb2.DocumentSource(
            filters=[retrieval_pb2.MetadataFilter(field="topic", equals=args.topic)],
            max_chunks=args.attempts, exchanges=args.exchanges, **teacher)
        report = {
            "asked": args.attempts,
            "exchanges": args.exchanges,
            "load_average": os.getloadavg(),
            "synthetic": build(stub, repository, "yield-synthetic", datasets_pb2.DatasetSource(synthetic=synthetic)),
            "grounded": build(stub, repository, "yield-grounded", datasets_pb2.DatasetSource(documents=documents)),
        }
        json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
        print()
    finally:
        channel.close()
        running.stop(grace=1)


if __name__ == "__main__":
    main()
