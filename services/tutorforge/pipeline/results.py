"""What each pipeline stage produced, typed: later stages and callers read fields, not dictionary keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tutorforge.v1 import datasets_pb2, inference_pb2, optimization_pb2, retrieval_pb2


@dataclass(frozen=True)
class MaterialResult:
    """Documents ingested into retrieval."""

    documents: int
    chunks_written: int
    failed: tuple[str, ...]
    seconds: float
    results: tuple[retrieval_pb2.DocumentIngestResult, ...]


@dataclass(frozen=True)
class DatasetResult:
    dataset: datasets_pb2.DatasetVersion

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def version(self) -> str:
        return self.dataset.version

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class TrainingResult:
    job_id: str
    adapter: str
    adapter_version: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class ChatTurn:
    question: str
    reply: str
    citations: tuple[inference_pb2.Citation, ...]
    summary: inference_pb2.GenerationSummary


@dataclass(frozen=True)
class ProgramResult:
    """A compiled teaching program (NAME@VERSION) and its validation scores."""

    program: optimization_pb2.ProgramInfo

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def version(self) -> str:
        return self.program.version

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class EvaluationResult:
    evaluation_id: str
    report: optimization_pb2.EvaluationReport
    # Local copies of the report files (report.md, report.json, charts), when a folder was given.
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class PublishResult:
    """What the inference service now serves: the loaded adapter, the promoted program."""

    adapter: inference_pb2.AdapterInfo | None = None
    program: optimization_pb2.PromoteProgramResponse | None = None


@dataclass
class PipelineResult:
    """Every stage's result; None for stages that did not run."""

    material: MaterialResult | None = None
    dataset: DatasetResult | None = None
    training: TrainingResult | None = None
    chat: list[ChatTurn] = field(default_factory=list)
    program: ProgramResult | None = None
    evaluation: EvaluationResult | None = None
    publish: PublishResult | None = None

    @property
    def adapter(self) -> str:
        """The adapter later stages answer with ("" = the base model)."""
        return self.training.adapter if self.training else ""
