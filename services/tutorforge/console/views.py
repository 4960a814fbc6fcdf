"""What the console's pages show, read from the services over gRPC (the inference HTTP server may run in
a process without the other services, so every read goes through the configured service addresses).
Each function returns plain JSON-ready data; the web module only routes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from tutorforge.core.errors import InvalidArgument, NotFound, Unavailable
from tutorforge.v1 import (
    datasets_pb2,
    datasets_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    jobs_pb2,
    optimization_pb2,
    optimization_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    training_pb2_grpc,
)

Channel = Callable[[str], grpc.Channel]

# Seconds a page waits on a service; a console page should answer or say why quickly.
TIMEOUT = 15.0
# How long a job page listens for new events before answering with what it has (the page polls again).
WATCH_WINDOW = 1.5
MAX_DOCUMENTS = 1000
MAX_SEARCH_HITS = 20
SAMPLE_DIALOGUES = 3
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
    def __init__(self, channel: Channel):
        self._channel = channel

    def _stub(self, service: str, stub_class: type) -> Any:
        return stub_class(self._channel(service))

    def _call(self, service: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as error:
            # UNIMPLEMENTED: the configured address is a server that does not host this service.
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                raise Unavailable(
                    f"the {service} service is not reachable at its configured address "
                    f"(TUTORFORGE_ADDRESSES__{service.upper()}): {error.details()}"
                ) from error
            raise

    # ----- tutors (the chat page's picker)

    def tutors(self) -> dict[str, Any]:
        """The base model, its adapters, and the stored teaching programs (empty with a note when the
        optimization service is not reachable: chat still works without programs)."""
        inference = self._stub("inference", inference_pb2_grpc.InferenceServiceStub)
        listing = self._call("inference", lambda: inference.ListAdapters(inference_pb2.ListAdaptersRequest(), timeout=TIMEOUT))
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
        stub = self._stub("optimization", optimization_pb2_grpc.OptimizationServiceStub)
        return list(self._call("optimization", lambda: stub.ListPrograms(optimization_pb2.ListProgramsRequest(), timeout=TIMEOUT)).programs)

    # ----- documents

    def documents(self) -> dict[str, Any]:
        stub = self._stub("retrieval", retrieval_pb2_grpc.RetrievalServiceStub)
        stats = self._call("retrieval", lambda: stub.GetStats(retrieval_pb2.GetStatsRequest(), timeout=TIMEOUT))
        documents: list[retrieval_pb2.DocumentInfo] = []
        token = ""
        while len(documents) < MAX_DOCUMENTS:
            page = self._call(
                "retrieval",
                lambda token=token: stub.ListDocuments(retrieval_pb2.ListDocumentsRequest(page_size=100, page_token=token), timeout=TIMEOUT),
            )
            documents.extend(page.documents)
            token = page.next_page_token
            if not token:
                break
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
        stub = self._stub("retrieval", retrieval_pb2_grpc.RetrievalServiceStub)
        # Threshold 0: the console shows every hit with its score, weak ones included.
        request = retrieval_pb2.SearchRequest(query=query, limit=limit, score_threshold=0.0, mode=_SEARCH_MODES[mode])
        response = self._call("retrieval", lambda: stub.Search(request, timeout=TIMEOUT))
        return {"query": query, "hits": [as_json(hit) for hit in response.hits]}

    # ----- datasets

    def datasets(self) -> dict[str, Any]:
        stub = self._stub("datasets", datasets_pb2_grpc.DatasetServiceStub)
        versions = []
        token = ""
        while True:
            page = self._call(
                "datasets", lambda token=token: stub.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=100, page_token=token), timeout=TIMEOUT)
            )
            for version in page.datasets:
                # The listing shows counts; the per-record drop list belongs to the version's page.
                version.manifest.ClearField("dropped")
                versions.append(as_json(version))
            token = page.next_page_token
            if not token:
                return {"datasets": versions}

    def dataset(self, name: str, version: str = "") -> dict[str, Any]:
        stub = self._stub("datasets", datasets_pb2_grpc.DatasetServiceStub)
        found = self._call(
            "datasets", lambda: stub.GetDataset(datasets_pb2.GetDatasetRequest(name=name, version=version), timeout=TIMEOUT)
        ).dataset
        export = stub.ExportDataset(
            datasets_pb2.ExportDatasetRequest(name=name, version=found.version, format=datasets_pb2.EXPORT_FORMAT_OPENAI),
            timeout=TIMEOUT,
        )
        samples = []
        try:
            for line in export:
                samples.append(line.line)
                if len(samples) == SAMPLE_DIALOGUES:
                    break
        finally:
            export.cancel()
        data = as_json(found)
        data["manifest"]["dropped"] = data["manifest"]["dropped"][:50]
        return {"dataset": data, "samples": samples}

    # ----- jobs

    def jobs(self) -> dict[str, Any]:
        """The newest jobs of each job-running service (they all serve ListJobs); a service this console
        cannot reach is named in `notes` instead of failing the page."""
        listed: dict[str, list[dict[str, Any]]] = {}
        notes: dict[str, str] = {}
        for service, stub_class in _JOB_SERVICES.items():
            stub = self._stub(service, stub_class)
            try:
                page = self._call(service, lambda stub=stub: stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=100), timeout=TIMEOUT))
            except Unavailable as error:
                listed[service], notes[service] = [], error.message
                continue
            listed[service] = [as_json(job) for job in page.jobs]
        return {**listed, "notes": notes}

    def job(self, job_id: str) -> dict[str, Any]:
        """A job, its events (replayed; a running job's new ones within a short window: the page polls
        again), and its curves' points."""
        kind = _kind_of(job_id)
        service = _JOB_SERVICE_OF_KIND[kind]
        stub = self._stub(service, _JOB_SERVICES[service])
        get = lambda: stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=TIMEOUT).job
        watch = lambda: stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=WATCH_WINDOW)
        job = self._call(service, get)
        events = [response.event for response in self._call(service, lambda: _within_window(watch()))]
        return {
            "job": as_json(job),
            "events": [as_json(event) for event in events],
            "curves": curves(kind, events),
        }

    # ----- adapters

    def adapters(self) -> dict[str, Any]:
        stub = self._stub("inference", inference_pb2_grpc.InferenceServiceStub)
        listing = self._call("inference", lambda: stub.ListAdapters(inference_pb2.ListAdaptersRequest(), timeout=TIMEOUT))
        return {
            "base_model": listing.base_model,
            "engine": listing.engine,
            "adapters": [{**as_json(a), "lineage": lineage(dict(a.metadata))} for a in listing.adapters],
        }

    def load_adapter(self, name: str, version: str = "") -> dict[str, Any]:
        stub = self._stub("inference", inference_pb2_grpc.InferenceServiceStub)
        request = inference_pb2.LoadAdapterRequest(name=name, version=version)
        return as_json(self._call("inference", lambda: stub.LoadAdapter(request, timeout=120)).adapter)

    def unload_adapter(self, name: str) -> dict[str, Any]:
        stub = self._stub("inference", inference_pb2_grpc.InferenceServiceStub)
        request = inference_pb2.UnloadAdapterRequest(name=name)
        return as_json(self._call("inference", lambda: stub.UnloadAdapter(request, timeout=TIMEOUT)).adapter)

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
        stub = self._stub("optimization", optimization_pb2_grpc.OptimizationServiceStub)
        request = optimization_pb2.GetEvaluationRequest(evaluation_id=evaluation_id, include_files=True)
        return self._call("optimization", lambda: stub.GetEvaluation(request, timeout=TIMEOUT))


# The services that run jobs, and which one runs each kind.
_JOB_SERVICES: dict[str, type] = {
    "datasets": datasets_pb2_grpc.DatasetServiceStub,
    "training": training_pb2_grpc.TrainingServiceStub,
    "optimization": optimization_pb2_grpc.OptimizationServiceStub,
}
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
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
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
