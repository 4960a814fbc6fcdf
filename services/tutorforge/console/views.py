"""What the console's pages show, read from the services through the client SDK (the inference HTTP server
may run in a process without the other services, so every read goes through the configured service
addresses, with the SDK's deadlines, retries and domain errors). Each function returns plain JSON-ready
data; the web module only routes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from tutorforge.client import (
    DatasetsClient,
    InferenceClient,
    OptimizationClient,
    RetrievalClient,
    TrainingClient,
)
from tutorforge.client.connection import Connection
from tutorforge.client.jobs import JobClient
from tutorforge.core.errors import InvalidArgument, NotFound, TutorforgeError, Unavailable
from tutorforge.v1 import optimization_pb2, retrieval_pb2

# Service name → the SDK connection to it (Runtime.connection).
Connections = Callable[[str], Connection]

# How long a job page listens for new events before answering with what it has (the page polls again).
WATCH_WINDOW = 1.5
MAX_DOCUMENTS = 1000
MAX_SEARCH_HITS = 20
SAMPLE_DIALOGUES = 3
# The newest jobs listed per job-running service.
MAX_JOBS = 100
# Which job metrics are drawn as curves, by job kind (job ids start with their kind's first 4 letters).
CURVES = {
    "training": ("loss", "eval_loss"),
    "optimization": ("best_score", "baseline_score", "optimized_score"),
    "evaluation": (),
    "dataset": (),
}
_SEARCH_MODES = {
    "dense": retrieval_pb2.SEARCH_MODE_DENSE,
    "sparse": retrieval_pb2.SEARCH_MODE_SPARSE,
    "hybrid": retrieval_pb2.SEARCH_MODE_HYBRID,
}


def as_json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class Console:
    def __init__(self, connection: Connections):
        self._connection = connection

    def _client(self, service: str) -> Any:
        return _CLIENTS[service](self._connection(service))

    def _call(self, service: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except TutorforgeError as error:
            # UNIMPLEMENTED: the configured address is a server that does not host this service.
            if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                raise Unavailable(
                    f"the {service} service is not reachable at its configured address "
                    f"(TUTORFORGE_ADDRESSES__{service.upper()}): {error.message}"
                ) from error
            raise

    # ----- tutors (the chat page's picker)

    def tutors(self) -> dict[str, Any]:
        """The base model, its adapters, and the stored teaching programs (empty with a note when the
        optimization service is not reachable: chat still works without programs)."""
        inference: InferenceClient = self._client("inference")
        listing = self._call("inference", inference.adapters)
        adapters = [a.name for a in listing.adapters if a.base_model in ("", listing.base_model)]
        programs: list[dict[str, Any]] = []
        note = ""
        try:
            programs = [
                {"name": p.name, "version": p.version, "adapter": p.adapter, "score": p.optimized_score}
                for p in self._programs()
            ]
        except Unavailable as error:
            note = error.message
        return {
            "base_model": listing.base_model,
            "adapters": sorted(set(adapters)),
            "programs": programs,
            "note": note,
        }

    def _programs(self) -> list[optimization_pb2.ProgramInfo]:
        optimization: OptimizationClient = self._client("optimization")
        return self._call("optimization", optimization.programs)

    # ----- documents

    def documents(self) -> dict[str, Any]:
        retrieval: RetrievalClient = self._client("retrieval")
        stats = self._call("retrieval", retrieval.stats)
        documents: list[retrieval_pb2.DocumentInfo] = self._call(
            "retrieval", lambda: list(islice(retrieval.documents(page_size=100), MAX_DOCUMENTS))
        )
        return {
            "stats": as_json(stats),
            "per_source": _counts(d.metadata.source or d.filename for d in documents),
            "per_subject": _counts(d.metadata.category or "(none)" for d in documents),
            "documents": [as_json(d) for d in documents],
            "listed": len(documents),
        }

    def search(self, query: str, limit: int = 5, mode: str = "dense") -> dict[str, Any]:
        query = query.strip()
        if not query:
            raise InvalidArgument("q is empty: type what to search for")
        if not 1 <= limit <= MAX_SEARCH_HITS:
            raise InvalidArgument(f"limit must be between 1 and {MAX_SEARCH_HITS}; got {limit}")
        if mode not in _SEARCH_MODES:
            raise InvalidArgument(f"mode must be one of {', '.join(_SEARCH_MODES)}; got {mode!r}")
        retrieval: RetrievalClient = self._client("retrieval")
        # Threshold 0: the console shows every hit with its score, weak ones included.
        hits = self._call("retrieval", lambda: retrieval.search(query, limit=limit, score_threshold=0.0, mode=_SEARCH_MODES[mode]))
        return {"query": query, "hits": [as_json(hit) for hit in hits]}

    # ----- datasets

    def datasets(self) -> dict[str, Any]:
        datasets: DatasetsClient = self._client("datasets")
        versions = []
        for version in self._call("datasets", lambda: list(datasets.list(page_size=100))):
            # The listing shows counts; the per-record drop list belongs to the version's page.
            version.manifest.ClearField("dropped")
            versions.append(as_json(version))
        return {"datasets": versions}

    def dataset(self, name: str, version: str = "") -> dict[str, Any]:
        datasets: DatasetsClient = self._client("datasets")
        found = self._call("datasets", lambda: datasets.get(name, version))
        export: Iterator[str] = datasets.export(name, found.version, format="openai")
        try:
            # Only the first few lines: closing the stream ends the call.
            samples = self._call("datasets", lambda: list(islice(export, SAMPLE_DIALOGUES)))
        finally:
            export.close()
        data = as_json(found)
        data["manifest"]["dropped"] = data["manifest"]["dropped"][:50]
        return {"dataset": data, "samples": samples}

    # ----- jobs

    def jobs(self) -> dict[str, Any]:
        """The newest jobs of each job-running service (they all serve ListJobs); a service this console
        cannot reach is named in `notes` instead of failing the page."""
        listed: dict[str, list[dict[str, Any]]] = {}
        notes: dict[str, str] = {}
        for service in _JOB_SERVICES:
            client: JobClient = self._client(service)
            try:
                jobs = self._call(service, lambda client=client: list(islice(client.jobs(page_size=MAX_JOBS), MAX_JOBS)))
            except Unavailable as error:
                listed[service], notes[service] = [], error.message
                continue
            listed[service] = [as_json(job) for job in jobs]
        return {**listed, "notes": notes}

    def job(self, job_id: str) -> dict[str, Any]:
        """A job, its events (replayed; a running job's new ones within a short window: the page polls
        again), and its curves' points."""
        kind = _kind_of(job_id)
        service = _JOB_SERVICE_OF_KIND[kind]
        client: JobClient = self._client(service)
        job = self._call(service, lambda: client.get_job(job_id))
        events = self._call(service, lambda: _within_window(client.watch_job(job_id, timeout=WATCH_WINDOW)))
        return {
            "job": as_json(job),
            "events": [as_json(event) for event in events],
            "curves": curves(kind, events),
        }

    # ----- adapters

    def adapters(self) -> dict[str, Any]:
        inference: InferenceClient = self._client("inference")
        listing = self._call("inference", inference.adapters)
        return {
            "base_model": listing.base_model,
            "engine": listing.engine,
            "adapters": [{**as_json(a), "lineage": lineage(dict(a.metadata))} for a in listing.adapters],
        }

    def load_adapter(self, name: str, version: str = "") -> dict[str, Any]:
        inference: InferenceClient = self._client("inference")
        return as_json(self._call("inference", lambda: inference.load_adapter(name, version)))

    def unload_adapter(self, name: str) -> dict[str, Any]:
        inference: InferenceClient = self._client("inference")
        return as_json(self._call("inference", lambda: inference.unload_adapter(name)))

    # ----- evaluation reports

    def evaluation(self, evaluation_id: str) -> dict[str, Any]:
        files = self._report(evaluation_id)
        return {
            "report": as_json(files.report),
            "charts": sorted(f.path for f in files.files if f.path.endswith(".png")),
            "markdown": next((f.content.decode("utf-8", "replace") for f in files.files if f.path.endswith(".md")), ""),
        }

    def evaluation_file(self, evaluation_id: str, path: str) -> bytes:
        for item in self._report(evaluation_id).files:
            if item.path == path:
                return item.content
        raise NotFound(f"report {evaluation_id} has no file {path!r}; its charts are listed on its page")

    def _report(self, evaluation_id: str) -> optimization_pb2.GetEvaluationResponse:
        optimization: OptimizationClient = self._client("optimization")
        return self._call("optimization", lambda: optimization.get_evaluation(evaluation_id, include_files=True))


_CLIENTS: dict[str, Callable[[Connection], Any]] = {
    "retrieval": RetrievalClient,
    "datasets": DatasetsClient,
    "training": TrainingClient,
    "optimization": OptimizationClient,
    "inference": InferenceClient,
}
# The services that run jobs, and which one runs each kind.
_JOB_SERVICES = ("datasets", "training", "optimization")
_JOB_SERVICE_OF_KIND = {"dataset": "datasets", "training": "training", "optimization": "optimization", "evaluation": "optimization"}


def _kind_of(job_id: str) -> str:
    for kind in CURVES:
        if job_id.startswith(kind[:4] + "-"):
            return kind
    raise NotFound(f"job_id {job_id!r} is not a job id (they start with trai-, opti-, eval- or data-)")


def _within_window(stream: Iterable[Any]) -> list[Any]:
    """The stream's answers until it ends or its deadline (the watch window) passes."""
    received: list[Any] = []
    try:
        # extend() keeps what arrived before the deadline.
        received.extend(stream)
    except TutorforgeError as error:
        if error.code != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return received


def curves(kind: str, events: Iterable[Any]) -> dict[str, list[list[float]]]:
    """Points of each curve metric: against the step for training, against the update's order for the
    others (optimization reports best scores per trial, not per step)."""
    points: dict[str, list[list[float]]] = {name: [] for name in CURVES.get(kind, ())}
    for event in events:
        for name, series in points.items():
            if name in event.metrics:
                x = event.step if kind == "training" else len(series) + 1
                series.append([float(x), float(event.metrics[name])])
    return {name: series for name, series in points.items() if series}


def lineage(metadata: dict[str, str]) -> dict[str, dict[str, str]]:
    """An adapter's metadata grouped the way training writes it: what it was trained on, how (the
    `training.` keys), and its benchmark scores (`benchmark.` keys); the rest is free metadata."""
    groups: dict[str, dict[str, str]] = {"data": {}, "training": {}, "benchmark": {}, "other": {}}
    for key, value in sorted(metadata.items()):
        if key in ("dataset", "dataset_version", "job_id"):
            groups["data"][key] = value
        elif key.startswith(("training.", "benchmark.")):
            group, _, rest = key.partition(".")
            groups[group][rest] = value
        else:
            groups["other"][key] = value
    return groups


def _counts(values: Iterable[str]) -> list[dict[str, Any]]:
    return [{"name": name, "count": count} for name, count in Counter(values).most_common()]
