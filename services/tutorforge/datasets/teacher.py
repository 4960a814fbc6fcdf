"""A teacher model for dataset generation: a separate, stronger model behind an OpenAI-compatible (vLLM,
SGLang, tutorforge's own HTTP door) or TGI endpoint, reached through the inference package's remote
engine clients, so generation does not load the platform's own inference service."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tutorforge.core.errors import FailedPrecondition, TutorforgeError
from tutorforge.core.settings import Settings
from tutorforge.v1 import inference_pb2

# The request's `teacher` value that means "the platform's inference service" even when one is configured.
INFERENCE = "inference"


@dataclass
class Teacher:
    engine: Any
    url: str
    kind: str
    # Served model name; "" = the endpoint's (first) base model.
    model: str

    def describe(self) -> dict[str, str]:
        return {"url": self.url, "kind": self.kind, "model": self.model}

    def writer(self, parameters: inference_pb2.GenerationParameters | None = None) -> TeacherWriter:
        return TeacherWriter(self, parameters or inference_pb2.GenerationParameters())


@dataclass
class TeacherWriter:
    """Writes generation turns on the teacher, asking it for the turn's JSON schema (response_format)."""

    teacher: Teacher
    parameters: inference_pb2.GenerationParameters

    def write(self, messages: list[dict[str, str]], schema: dict[str, Any], name: str, max_tokens: int, what: str) -> str:
        from tutorforge.inference.types import GenerationRequest, ResponseFormat, SamplingParams

        given = self.parameters
        params = SamplingParams(
            max_tokens=given.max_tokens or max_tokens,
            temperature=given.temperature if given.HasField("temperature") else 0.0,
            top_p=given.top_p if given.HasField("top_p") else 1.0,
            stop=tuple(given.stop),
            seed=given.seed if given.HasField("seed") else None,
            response_format=ResponseFormat(type="json_schema", schema=json.dumps(schema), name=name),
        )
        request = GenerationRequest(params=params, messages=messages, adapter=self.teacher.model)
        try:
            text, _ = self.teacher.engine.submit(request).collect()
        except TutorforgeError as error:
            raise type(error)(f"{what}: the teacher at {self.teacher.url} answered: {error}") from error
        return text


def open_teacher(settings: Settings, requested: str, field: str) -> Teacher | None:
    """The teacher a source generates with, checked reachable now (before any job starts): the request's
    URL, or the configured datasets.teacher_url when the request leaves `teacher` empty; None = the
    platform's inference service. Raises FailedPrecondition naming `field` or the setting."""
    configured = settings.datasets
    if requested == INFERENCE or not (requested or configured.teacher_url):
        return None
    url = requested or configured.teacher_url
    where = field if requested else "datasets.teacher_url (TUTORFORGE_DATASETS__TEACHER_URL)"
    if not url.startswith(("http://", "https://")):
        raise FailedPrecondition(f"{where} must be an http(s) URL of the teacher endpoint, or {INFERENCE!r}; got {url!r}")
    try:
        from tutorforge.inference.remote import OpenAIEngine, TgiEngine
    except ImportError as error:
        raise FailedPrecondition(f"{where}: a teacher needs the inference client libraries: pip install 'tutorforge[inference]'") from error
    remote = settings.model_copy(deep=True)
    # OpenAI-style URLs are usually given with their /v1; the client adds it itself.
    remote.inference.engine_url = url.rstrip("/").removesuffix("/v1")
    engine = (TgiEngine if configured.teacher_kind == "tgi" else OpenAIEngine)(remote)
    try:
        engine.probe()
    except TutorforgeError as error:
        engine.close()
        raise FailedPrecondition(f"{where}: the teacher at {url} is not reachable: {error}") from error
    return Teacher(engine=engine, url=url, kind=configured.teacher_kind, model=configured.teacher_model)
