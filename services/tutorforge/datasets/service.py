"""The dataset service's domain: build jobs, paged listing, export and dry-run validation.
Plain Python: the gRPC servicer only translates to and from it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tutorforge.artifacts.datasets import DatasetInfo, DatasetRepository
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.jobs import JobDirectory, JobManager, JobRecord, JobReporter
from tutorforge.core.paging import keyset_page, newest_first
from tutorforge.core.settings import Settings
from tutorforge.datasets.builder import BuildOptions, BuildRequest, FileSource, build_dataset
from tutorforge.datasets.validation import chat_token_counter, validate_record


@dataclass
class RecordProblem:
    source: str
    index: int
    reason: str


@dataclass
class ValidationReport:
    valid: int = 0
    invalid: int = 0
    problems: list[RecordProblem] = field(default_factory=list)


def export_line(record: dict[str, Any], openai: bool) -> str:
    """One exported record: OpenAI fine-tuning form holds only `messages`; ChatML keeps id and metadata."""
    if openai:
        return json.dumps({"messages": record["conversations"]}, ensure_ascii=False)
    return json.dumps(
        {"id": record["id"], "conversations": record["conversations"], "metadata": record.get("metadata", {}),
         "source": record.get("source", {})},
        ensure_ascii=False,
    )


# A ListDatasets token: the key of the last version given (name, then newest first). The ',' sorts before
# every character a name may hold, so the keys of one name's versions stay together and in name order.
_PAGE_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63},\d{16}\.[0-9a-f]{1,64}$")


def _page_key(info: DatasetInfo) -> str:
    return f"{info.name},{newest_first(info.created_at)}.{info.version}"


class DatasetService:
    def __init__(self, store: ArtifactStore, settings: Settings):
        self.settings = settings
        self.repository = DatasetRepository(store)
        self.jobs = JobManager(store, "dataset", lease_seconds=settings.jobs.lease_seconds)
        self.job_directory = JobDirectory(self.jobs)

    def recover_interrupted(self) -> list[str]:
        return self.jobs.recover_interrupted("start the build again with `tutorforge dataset build`")

    def create(self, build: BuildRequest) -> JobRecord:
        """Start a build job; `build` is checked first, so a bad request never becomes a job."""
        build = build.check()
        job = self.jobs.create(
            labels={"dataset": build.name},
            parameters={"name": build.name, "sources": [source.parameters() for source in build.sources],
                        "options": vars(build.options), "description": build.description},
        )

        def work(reporter: JobReporter) -> str:
            reporter.progress("loading the tokenizer", progress=0.0)
            count_tokens, tokenizer = chat_token_counter(self.settings.models)
            info = build_dataset(build, self.repository, count_tokens, tokenizer, reporter)
            self.jobs.update(
                job.id,
                message=f"stored {info.name} version {info.version}",
                metrics={"records": info.stats["records"], "dropped": len(info.manifest["dropped"])},
                labels={"version": info.version},
            )
            return info.version

        self.jobs.start(job.id, work)
        return self.jobs.get(job.id)

    def list_page(self, page_size: int, page_token: str) -> tuple[list[DatasetInfo], str]:
        """Dataset versions by name, each name's newest first, after the version `page_token` names (keyset
        paging: a version stored or deleted between pages neither shifts nor repeats the others)."""
        versions = sorted(self.repository.list(), key=_page_key)
        return keyset_page(versions, _page_key, page_size, page_token, default_size=50, token_pattern=_PAGE_TOKEN)

    def export(self, name: str, version: str, splits: Iterable[str], openai: bool) -> Iterator[str]:
        info = self.repository.get(name, version)
        for split in splits:
            for record in self.repository.records(info.name, info.version, split):
                yield export_line(record, openai)

    def validate(self, files: list[FileSource], max_tokens: int) -> ValidationReport:
        """Dry run: parse and validate every record, store nothing."""
        if not files:
            raise InvalidArgument("no files to validate")
        BuildOptions(max_tokens=max_tokens).check()
        count_tokens, _ = chat_token_counter(self.settings.models)
        report = ValidationReport()
        for file in files:
            parsed = file.parsed
            issues = [(issue.index, issue.reason) for issue in parsed.issues]
            for index, record in parsed.records:
                problem, _ = validate_record(record, count_tokens, max_tokens)
                if problem:
                    issues.append((index, problem))
            report.invalid += len(issues)
            report.valid += parsed.records_read - len(issues)
            report.problems.extend(RecordProblem(file.filename, index, reason) for index, reason in sorted(issues))
        return report
