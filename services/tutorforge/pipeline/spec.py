"""A pipeline as a YAML spec (material → dataset → train → optimize → evaluate → publish), what a
school's ML team re-runs per subject. Every stage is optional; a stage that needs an earlier one says so.
A bad spec is refused before anything runs, with the field to fix (`spec.train.max_steps: ...`). Input
paths are relative to the spec's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from tutorforge.client.convert import enum_value
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.names import BASE, validate_name
from tutorforge.v1 import datasets_pb2, optimization_pb2, training_pb2

# Evaluation targets that name what this spec trains / compiles instead of a fixed adapter or program.
THIS_ADAPTER, THIS_PROGRAM = "adapter", "program"
# decontaminate_against entries that name bundled sets instead of files.
BUNDLED_SETS = ("benchmark", "evaluation")


def _named(value: str) -> str:
    # The server would refuse it too, but only after the earlier stages ran.
    try:
        return validate_name(value)
    except InvalidArgument as error:
        raise ValueError(error.message.removeprefix("name ")) from None


def _member_of(enum: Any, prefix: str) -> AfterValidator:
    """A name of the proto enum's members (without `prefix`), as the client accepts it."""

    def check(value: str) -> str:
        try:
            enum_value(enum, prefix, value, "value")
        except InvalidArgument as error:
            raise ValueError(error.message.removeprefix("value: ")) from None
        return value

    return AfterValidator(check)


def _fields_of(message: Any, without: tuple[str, ...] = ()) -> AfterValidator:
    """A mapping whose keys are fields of the proto `message` (what the client builds it from)."""
    fields = sorted(set(message.DESCRIPTOR.fields_by_name) - set(without))

    def check(value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"unknown {message.DESCRIPTOR.name} field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        return value

    return AfterValidator(check)


Name = Annotated[str, AfterValidator(_named)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MaterialSpec(_Section):
    """Documents to ingest: the bundled sample material and/or files (relative to the spec's folder)."""

    bundled: bool = False
    paths: list[str] = Field(default_factory=list)
    category: str = ""
    topic: str = ""
    # 0 = the server's defaults (512 and 64 tokens).
    chunk_size_tokens: int = Field(0, ge=0)
    chunk_overlap_tokens: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _something(self) -> MaterialSpec:
        if not self.bundled and not self.paths:
            raise ValueError("give paths (files or folders) or bundled: true")
        return self


class SeedsSpec(_Section):
    bundled: bool = False
    files: list[str] = Field(default_factory=list)
    dialogues_per_card: int = Field(0, ge=0, le=32)
    seed: int = 0


class SyntheticSpec(_Section):
    topic: str
    conversations: int = Field(1, ge=1)
    exchanges: int = Field(1, ge=1)
    max_tokens: int = Field(0, ge=0)
    teacher: str = ""


class DocumentsSpec(_Section):
    filters: dict[str, str | list[str]] = Field(default_factory=dict)
    max_chunks: int = Field(0, ge=0)
    exchanges: int = Field(0, ge=0)
    teacher: str = ""


class SourceSpec(_Section):
    """Exactly one of: a record file, lesson-card seeds, synthetic generation, ingested documents."""

    file: str | None = None
    seeds: SeedsSpec | None = None
    synthetic: SyntheticSpec | None = None
    documents: DocumentsSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> SourceSpec:
        given = [name for name in ("file", "seeds", "synthetic", "documents") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of file, seeds, synthetic, documents (got {', '.join(given) or 'none'})")
        return self


class DatasetSpec(_Section):
    """A dataset to build from `sources`, or (no sources) an existing one to use as it is."""

    name: Name
    version: str = ""
    sources: list[SourceSpec] = Field(default_factory=list)
    # BuildOptions fields: seed, validation_fraction, max_tokens, min_question_rate, ...
    options: Annotated[dict[str, Any], _fields_of(datasets_pb2.BuildOptions, without=("decontaminate_against",))] = Field(default_factory=dict)
    # Record files, or "benchmark" / "evaluation" for the bundled held-out sets.
    decontaminate_against: list[str] = Field(default_factory=list)
    description: str = ""




class TrainSpec(_Section):
    adapter: Name
    num_workers: int = Field(0, ge=0)
    # TrainingArguments fields: max_steps, learning_rate, epochs, eval_steps, max_seq_length, ...
    arguments: Annotated[dict[str, Any], _fields_of(training_pb2.TrainingArguments)] = Field(default_factory=dict)
    lora: Annotated[dict[str, Any], _fields_of(training_pb2.LoraConfig)] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)




class OptimizeSpec(_Section):
    program: Name
    optimizer: Annotated[str, _member_of(optimization_pb2.Optimizer, "OPTIMIZER_")] = "labeled_few_shot"
    metric: Annotated[str, _member_of(optimization_pb2.Metric, "METRIC_")] = "pedagogical"
    # OptimizerBudget fields: max_labeled_demos, max_train_examples, max_validation_examples, trials, ...
    budget: Annotated[dict[str, int], _fields_of(optimization_pb2.OptimizerBudget)] = Field(default_factory=dict)
    max_tokens: int = Field(0, ge=0)
    seed: int = 0
    # Frequency penalties to try with the unoptimized program before compiling (docs/optimization.md).
    frequency_penalties: list[float] = Field(default_factory=list, max_length=4)





class EvaluateSpec(_Section):
    # "base", "adapter" / "program" (what this spec trains / compiles), or "adapter:NAME", "program:NAME".
    targets: list[str] = Field(default_factory=lambda: [BASE, THIS_ADAPTER, THIS_PROGRAM], min_length=1)
    # A bundled set ("tutor-benchmark") instead of the dataset's validation split.
    evaluation_set: str = ""
    max_examples: int = Field(0, ge=0)
    max_tokens: int = Field(0, ge=0)
    threads: int = Field(0, ge=0)
    # Where the report's files are copied (an output: relative to the working directory); "" = not copied.
    report_dir: str = ""


class PublishSpec(_Section):
    load_adapter: bool = True
    promote_program: bool = True
    # Promote even when the program does not beat the served version on the benchmark.
    force: bool = False


class PipelineSpec(_Section):
    name: str = "pipeline"
    material: MaterialSpec | None = None
    dataset: DatasetSpec | None = None
    train: TrainSpec | None = None
    optimize: OptimizeSpec | None = None
    evaluate: EvaluateSpec | None = None
    publish: PublishSpec | None = None
    # Folder that relative paths are read from (the spec file's; set by load_spec).
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _stages_have_inputs(self) -> PipelineSpec:
        if self.train and not self.dataset:
            raise ValueError("train: needs a dataset section (the dataset to train on)")
        if self.optimize and not self.dataset:
            raise ValueError("optimize: needs a dataset section (the dataset to compile on)")
        if self.evaluate:
            if not self.dataset and not self.evaluate.evaluation_set:
                raise ValueError("evaluate: needs a dataset section or evaluate.evaluation_set")
            if THIS_ADAPTER in self.evaluate.targets and not self.train:
                raise ValueError("evaluate.targets: 'adapter' names the adapter of the train section, which is missing")
            if THIS_PROGRAM in self.evaluate.targets and not self.optimize:
                raise ValueError("evaluate.targets: 'program' names the program of the optimize section, which is missing")
        if self.publish:
            if self.publish.load_adapter and not self.train:
                raise ValueError("publish.load_adapter: needs a train section (the adapter to load)")
            if self.publish.promote_program and not self.optimize:
                raise ValueError("publish.promote_program: needs an optimize section (the program to promote)")
        return self

    def path(self, relative: str) -> Path:
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def files(self, paths: list[str], field: str) -> list[Path]:
        """Existing files named by `paths` (folders expand to their files), or InvalidArgument naming `field`."""
        found: list[Path] = []
        for index, relative in enumerate(paths):
            path = self.path(relative)
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if p.is_file())
            elif path.is_file():
                found.append(path)
            else:
                raise InvalidArgument(f"spec.{field}[{index}]: {path} does not exist")
        return found

    def check_files(self) -> None:
        """Every file the spec names exists (checked before any stage runs)."""
        if self.material:
            self.files(self.material.paths, "material.paths")
        if self.dataset:
            for index, source in enumerate(self.dataset.sources):
                if source.file is not None:
                    self.files([source.file], f"dataset.sources[{index}].file")
                if source.seeds is not None:
                    self.files(source.seeds.files, f"dataset.sources[{index}].seeds.files")
            self.files([p for p in self.dataset.decontaminate_against if p not in BUNDLED_SETS], "dataset.decontaminate_against")


def _location(error: dict[str, Any]) -> str:
    parts = [f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]]
    return "spec" + "".join(parts)


def parse_spec(data: Any, base_dir: Path = Path(".")) -> PipelineSpec:
    """A validated spec from parsed YAML; InvalidArgument naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidArgument("spec: must be a YAML mapping with sections material, dataset, train, optimize, evaluate, publish")
    try:
        spec = PipelineSpec.model_validate({**data, "base_dir": base_dir})
    except ValidationError as error:
        first = error.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        # Checks across sections have no location of their own: their message starts with the field.
        raise InvalidArgument(f"{_location(first)}: {message}" if first["loc"] else f"spec.{message}") from None
    spec.check_files()
    return spec


def load_spec(path: str | Path) -> PipelineSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidArgument(f"spec {path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InvalidArgument(f"spec {path}: not valid YAML ({' '.join(str(error).split())})") from None
    return parse_spec(data, path.resolve().parent)

