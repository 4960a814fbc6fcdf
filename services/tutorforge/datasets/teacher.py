"""A teacher model for dataset generation: a separate, stronger model behind an OpenAI-compatible (vLLM,
SGLang, tutorforge's own HTTP door) or TGI endpoint, reached through `core.chat_endpoint`, so generation
does not load the platform's own inference service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tutorforge.core.chat_endpoint import ChatEndpoint
from tutorforge.core.errors import FailedPrecondition, TutorforgeError
from tutorforge.core.settings import Settings
from tutorforge.v1 import inference_pb2

# The request's `teacher` value that means "the platform's inference service" even when one is configured.
INFERENCE = "inference"


@dataclass
class Teacher:
    endpoint: ChatEndpoint
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
        given = self.parameters
        try:
            return self.teacher.endpoint.complete(
                messages,
                max_tokens=given.max_tokens or max_tokens,
                schema=schema,
                name=name,
                temperature=given.temperature if given.HasField("temperature") else 0.0,
                top_p=given.top_p if given.HasField("top_p") else 1.0,
                stop=tuple(given.stop),
                seed=given.seed if given.HasField("seed") else None,
            )
        except TutorforgeError as error:
            raise type(error)(f"{what}: the teacher at {self.teacher.url} answered: {error}") from error


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
    token = settings.server.api_token.get_secret_value() if settings.server.api_token else ""
    try:
        endpoint = ChatEndpoint(url, configured.teacher_kind, configured.teacher_model, token)
    except ImportError as error:
        raise FailedPrecondition(f"{where}: a teacher needs httpx: pip install 'tutorforge[datasets]'") from error
    try:
        endpoint.probe()
    except TutorforgeError as error:
        endpoint.close()
        raise FailedPrecondition(f"{where}: the teacher at {url} is not reachable: {error}") from error
    return Teacher(endpoint=endpoint, url=url, kind=configured.teacher_kind, model=configured.teacher_model)
