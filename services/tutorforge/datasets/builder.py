"""Building a dataset version from any mix of sources: read, validate, filter on quality, de-duplicate,
decontaminate, split, hash and store. Plain Python: the servicer and the tests call it directly."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.names import validate_name
from tutorforge.core.pedagogy import quality_signals
from tutorforge.core.validation import echo
from tutorforge.datasets.dedup import Decontaminator, evaluation_texts, find_duplicates
from tutorforge.datasets.formats import Issue, ParsedFile, RecordFormat, parse_file, read_items
from tutorforge.datasets.split import split_records, subject_of
from tutorforge.datasets.validation import DEFAULT_MAX_TOKENS, TokenCounter, validate_record

HISTOGRAM_BOUNDS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
VERSION_LENGTH = 12
# Longest list of problems quoted in a strict-mode failure.
_STRICT_QUOTE = 5


class Progress(Protocol):
    """What a build reports to (a JobReporter in the service)."""

    def progress(
        self, message: str = "", *, progress: float | None = None, step: int = 0, total_steps: int = 0, **_: Any
    ) -> None: ...

    def check_cancelled(self) -> None: ...


class _SourceProgress:
    """A source's own steps (replies, chunks) mapped onto its share of the whole build's progress."""

    def __init__(self, parent: Progress, position: int, stages: int):
        self.parent = parent
        self.position = position
        self.stages = stages

    def progress(self, message: str = "", *, step: int = 0, total_steps: int = 0, **_: Any) -> None:
        done = step / total_steps if total_steps else 0.0
        self.parent.progress(message, progress=(self.position + done) / self.stages, step=step, total_steps=total_steps)

    def check_cancelled(self) -> None:
        self.parent.check_cancelled()


class SilentProgress:
    def progress(self, message: str = "", **_: Any) -> None:
        pass

    def check_cancelled(self) -> None:
        pass


@dataclass
class SourceResult:
    """Normalised records of one source, with the index of each within the source, and what was lost."""

    name: str
    format: str
    records_read: int
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    # Generation settings etc. that belong in the manifest.
    parameters: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    name: str

    def parameters(self) -> dict[str, Any]: ...

    def read(self, progress: Progress) -> SourceResult: ...


@dataclass
class FileSource:
    """A record file; parsed eagerly so a malformed file is refused before any job starts."""

    filename: str
    content: bytes
    format: RecordFormat | None = None
    parsed: ParsedFile = field(init=False)

    def __post_init__(self) -> None:
        self.parsed = parse_file(self.filename, self.content, self.format)

    @property
    def name(self) -> str:
        return self.filename

    def parameters(self) -> dict[str, Any]:
        return {
            "kind": "file",
            "file": self.filename,
            "format": self.parsed.format.value,
            "sha256": hashlib.sha256(self.content).hexdigest(),
        }

    def read(self, progress: Progress) -> SourceResult:
        return SourceResult(
            name=self.filename,
            format=self.parsed.format.value,
            records_read=self.parsed.records_read,
            records=list(self.parsed.records),
            issues=list(self.parsed.issues),
            parameters=self.parameters(),
        )


@dataclass
class EvaluationFile:
    """Evaluation records (any JSON shape with question/answer or conversations) to decontaminate against."""

    filename: str
    content: bytes

    def items(self) -> list[Any]:
        return [item for _, item in read_items(self.filename, self.content)[0]]

    def parameters(self) -> dict[str, Any]:
        return {"file": self.filename, "sha256": hashlib.sha256(self.content).hexdigest()}


@dataclass
class BuildOptions:
    max_tokens: int = DEFAULT_MAX_TOKENS
    strict: bool = False
    near_duplicate_threshold: float = 0.85
    validation_fraction: float = 0.1
    seed: int = 0
    decontamination_ngram: int = 8
    min_question_rate: float | None = None
    drop_answer_revealing: bool = False

    def check(self) -> BuildOptions:
        if not 16 <= self.max_tokens <= 131072:
            raise InvalidArgument(f"max_tokens {self.max_tokens} is out of range: use 16..131072 (default {DEFAULT_MAX_TOKENS})")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise InvalidArgument("near_duplicate_threshold must be in (0, 1]; 1 disables near-duplicate removal")
        if not 0 <= self.validation_fraction < 1:
            raise InvalidArgument("validation_fraction must be in [0, 1)")
        if not 2 <= self.decontamination_ngram <= 64:
            raise InvalidArgument("decontamination_ngram must be in 2..64 (default 8)")
        if self.min_question_rate is not None and not 0 <= self.min_question_rate <= 1:
            raise InvalidArgument("min_question_rate must be in [0, 1]")
        return self


@dataclass
class BuildRequest:
    name: str
    sources: list[Source]
    options: BuildOptions = field(default_factory=BuildOptions)
    description: str = ""
    # Records overlapping these evaluation files are dropped.
    evaluation: list[EvaluationFile] = field(default_factory=list)

    def check(self) -> BuildRequest:
        validate_name(self.name, "dataset name")
        if not self.sources:
            raise InvalidArgument("no sources: give at least one input file, a topic or a document filter")
        self.options.check()
        for position, file in enumerate(self.evaluation):
            # Parsed now, so that a malformed file is refused up front instead of failing the job later.
            where = f"options.decontaminate_against[{position}]"
            try:
                texts = [text for item in file.items() for text in evaluation_texts(item)]
            except InvalidArgument as error:
                raise InvalidArgument(f"{where}: {error.message}") from error
            if not texts:
                raise InvalidArgument(
                    f"{where} ({echo(file.filename)}) has no evaluation text: give records with question/answer, "
                    "conversations or messages"
                )
        return self


@dataclass
class Dropped:
    source: str
    index: int
    reason: str
    # Short category counted in the manifest (invalid, duplicate, contaminated, ...).
    kind: str


@dataclass
class _Candidate:
    source: str
    index: int
    record: dict[str, Any]
    tokens: int = 0


def record_id(record: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"conversations": record["conversations"], "metadata": record.get("metadata", {})},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def content_hash(records: list[dict[str, Any]], parameters: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(parameters, sort_keys=True).encode("utf-8"))
    for record in records:
        digest.update(b"\n")
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _histogram(token_counts: list[int], max_tokens: int) -> list[dict[str, int]]:
    bounds = [bound for bound in HISTOGRAM_BOUNDS if bound < max_tokens] + [max_tokens]
    counts = Counter(next(bound for bound in bounds if tokens <= bound) for tokens in token_counts)
    return [{"upper_bound": bound, "count": counts.get(bound, 0)} for bound in bounds]


def dataset_stats(train: list[dict[str, Any]], validation: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    records = train + validation
    tokens = [record["quality"]["tokens"] for record in records]
    return {
        "records": len(records),
        "train_records": len(train),
        "validation_records": len(validation),
        "turns": sum(len(record["conversations"]) for record in records),
        "token_length_histogram": _histogram(tokens, max_tokens),
        "records_per_subject": dict(sorted(Counter(subject_of(record) or "unknown" for record in records).items())),
        "question_rate": round(sum(r["quality"]["question_rate"] for r in records) / len(records), 4) if records else 0.0,
        "answer_reveal_rate": round(sum(1 for r in records if r["quality"]["reveals_answer"]) / len(records), 4) if records else 0.0,
        "mean_tokens": round(sum(tokens) / len(tokens), 2) if tokens else 0.0,
    }


@dataclass
class Screening:
    """Records that passed every check, in source order, and everything dropped."""

    kept: list[_Candidate]
    dropped: list[Dropped]
    summaries: list[dict[str, Any]]
    source_parameters: list[dict[str, Any]]


def screen(
    request: BuildRequest, count_tokens: TokenCounter, progress: Progress | None = None
) -> Screening:
    """Read every source and drop what fails validation, the quality filters, de-duplication and
    decontamination. In strict mode an invalid record fails the whole build (InvalidArgument)."""
    progress = progress or SilentProgress()
    options = request.options
    dropped: list[Dropped] = []
    candidates: list[_Candidate] = []
    summaries: list[dict[str, Any]] = []
    source_parameters: list[dict[str, Any]] = []
    invalid: list[Dropped] = []
    stages = len(request.sources) + 2
    for position, source in enumerate(request.sources):
        progress.check_cancelled()
        progress.progress(f"reading {source.name}", step=position, total_steps=stages)
        result = source.read(_SourceProgress(progress, position, stages))
        source_parameters.append(result.parameters)
        invalid += [Dropped(issue.source, issue.index, issue.reason, issue.kind) for issue in result.issues]
        kept_before = len(candidates)
        for index, record in result.records:
            problem, tokens = validate_record(record, count_tokens, options.max_tokens)
            if problem:
                invalid.append(Dropped(result.name, index, problem, "invalid"))
            else:
                candidates.append(_Candidate(result.name, index, record, tokens))
        summaries.append(
            {"source": result.name, "format": result.format, "records_read": result.records_read, "kept": len(candidates) - kept_before}
        )
    if options.strict and invalid:
        listed = "; ".join(f"{d.source}[{d.index}]: {d.reason}" for d in invalid[:_STRICT_QUOTE])
        more = f" (and {len(invalid) - _STRICT_QUOTE} more)" if len(invalid) > _STRICT_QUOTE else ""
        raise InvalidArgument(f"strict mode: {len(invalid)} invalid record(s), nothing stored: {listed}{more}")
    dropped += invalid

    progress.progress("filtering on quality, de-duplicating, decontaminating", step=stages - 2, total_steps=stages)
    survivors: list[_Candidate] = []
    for candidate in candidates:
        signals = quality_signals(candidate.record["conversations"])
        candidate.record["quality"] = {
            "question_rate": round(signals.question_rate, 4),
            "reveals_answer": signals.reveals_answer,
            "tokens": candidate.tokens,
        }
        if options.min_question_rate is not None and signals.question_rate < options.min_question_rate:
            dropped.append(Dropped(candidate.source, candidate.index, f"tutor asks a question in {signals.question_rate:.0%} of turns (minimum {options.min_question_rate:.0%})", "low_question_rate"))
        elif options.drop_answer_revealing and signals.reveals_answer:
            dropped.append(Dropped(candidate.source, candidate.index, "a tutor turn reveals the final answer", "reveals_answer"))
        else:
            survivors.append(candidate)

    duplicates = find_duplicates([c.record["conversations"] for c in survivors], options.near_duplicate_threshold)
    decontaminator = Decontaminator(
        (text for file in request.evaluation for item in file.items() for text in evaluation_texts(item)),
        options.decontamination_ngram,
    )
    kept: list[_Candidate] = []
    for position, candidate in enumerate(survivors):
        duplicate = duplicates.get(position)
        if duplicate:
            first = survivors[duplicate.of]
            what = "exact duplicate" if duplicate.kind == "exact_duplicate" else f"near duplicate (Jaccard ≥ {options.near_duplicate_threshold:g})"
            dropped.append(Dropped(candidate.source, candidate.index, f"{what} of {first.source}[{first.index}]", duplicate.kind))
            continue
        overlap = decontaminator.overlap(candidate.record["conversations"]) if decontaminator else None
        if overlap:
            dropped.append(Dropped(candidate.source, candidate.index, overlap, "contaminated"))
            continue
        kept.append(candidate)
    kept_by_source = Counter(candidate.source for candidate in kept)
    dropped_by_source = Counter((d.source, d.kind) for d in dropped)
    for summary in summaries:
        summary["kept"] = kept_by_source.get(summary["source"], 0)
        reasons = {kind: count for (source, kind), count in sorted(dropped_by_source.items()) if source == summary["source"]}
        summary["dropped"] = sum(reasons.values())
        summary["dropped_by_reason"] = reasons
    return Screening(kept=kept, dropped=dropped, summaries=summaries, source_parameters=source_parameters)


def build_dataset(
    request: BuildRequest,
    repository: DatasetRepository,
    count_tokens: TokenCounter,
    tokenizer_name: str,
    progress: Progress | None = None,
) -> DatasetInfo:
    """Build and store a version; returns it (the stored one if this content was built before)."""
    progress = progress or SilentProgress()
    request.check()
    screening = screen(request, count_tokens, progress)
    if not screening.kept:
        reasons = Counter(d.kind for d in screening.dropped)
        raise InvalidArgument(
            f"no record survived the checks ({', '.join(f'{k}: {v}' for k, v in reasons.items()) or 'no records'}); "
            "see the dropped records with `tutorforge dataset validate FILE`"
        )
    records = []
    for candidate in screening.kept:
        record = {
            "conversations": candidate.record["conversations"],
            "metadata": candidate.record.get("metadata", {}),
            "source": candidate.record.get("source", {}),
            "quality": candidate.record["quality"],
        }
        record["id"] = record_id(record)
        records.append(record)
    parameters = {
        "options": asdict(request.options),
        "sources": screening.source_parameters,
        "evaluation": [file.parameters() for file in request.evaluation],
        "tokenizer": tokenizer_name,
    }
    digest = content_hash(records, parameters)
    train, validation = split_records(records, request.options.validation_fraction, request.options.seed)
    steps = len(request.sources) + 2
    progress.progress(f"storing {len(records)} records", step=steps - 1, total_steps=steps)
    progress.check_cancelled()
    info = DatasetInfo(
        name=request.name,
        version=digest[:VERSION_LENGTH],
        content_hash=digest,
        created_at=time.time(),
        description=request.description,
        stats=dataset_stats(train, validation, request.options.max_tokens),
        manifest={
            "sources": screening.summaries,
            "dropped": [asdict(d) for d in screening.dropped],
            "dropped_by_reason": dict(sorted(Counter(d.kind for d in screening.dropped).items())),
            "parameters": parameters,
            "tokenizer": tokenizer_name,
        },
    )
    return repository.save(info, {"train": train, "validation": validation})
