"""Generated sources: synthetic Socratic dialogues about a topic, and dialogues grounded in ingested
document chunks. Both write a dialogue turn by turn, each turn a focused prompt answered as a small JSON
document (a schema the inference service enforces), and drop dialogues whose tutor reveals the answer or
does not ask. They talk to the inference and retrieval services through the SDK's clients, or to a
teacher endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.json_format import MessageToDict

from tutorforge.client.inference import InferenceClient
from tutorforge.client.retrieval import RetrievalClient
from tutorforge.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TutorforgeError,
)
from tutorforge.core.pedagogy import reveals_answer
from tutorforge.datasets import prompts
from tutorforge.datasets.builder import Progress, SourceResult
from tutorforge.datasets.dedup import words
from tutorforge.datasets.formats import Issue
from tutorforge.v1 import inference_pb2, retrieval_pb2

if TYPE_CHECKING:
    from tutorforge.datasets.teacher import Teacher

MAX_CONVERSATIONS = 200
MAX_EXCHANGES = 8
DEFAULT_MAX_CHUNKS = 20
DEFAULT_DOCUMENT_EXCHANGES = 2
DEFAULT_MIN_FAITHFULNESS = 0.3
# Generated turns where more of the word 4-grams repeat than this are decoding loops, not dialogue.
_MAX_REPETITION = 0.3
# How much of a dropped generation the reason quotes.
_QUOTE_CHARS = 120
_CONTENT_WORD = re.compile(r"[a-z][a-z'-]{3,}")
# Frequent words that say nothing about whether a turn is grounded in the passage.
_STOPWORDS = frozenset(
    "about above after again also because been before being below between both could does doing down during each "
    "even every from have having here itself just like make many more most much must need only other over same "
    "should some such than that their them then there these they this those through very want what when where "
    "which while will with would your yours think know good great idea question answer tell really right well "
    "sure let's lets please maybe might".split()
)


_DOWNSTREAM_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _call(what: str, service: str, call: Callable[[], Any]) -> Any:
    """`call()`, SDK calls to `service` on behalf of `what`; their domain error (the SDK maps statuses and
    retries refusals) says which part of the build needed the service and how to provide it."""
    try:
        return call()
    except TutorforgeError as error:
        code = error.code
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
            raise FailedPrecondition(
                f"{what} needs the {service} service, which is not reachable ({code.name}: {error.message}); "
                f"host it with `tutorforge serve {service}` or set TUTORFORGE_ADDRESSES__{service.upper()}"
            ) from error
        # Keep the downstream status (e.g. an unknown adapter, a full queue) and say which call it was.
        kind = _DOWNSTREAM_ERRORS.get(code, FailedPrecondition)
        raise kind(f"{what}: the {service} service answered {code.name}: {error.message}") from error


def _chat(client: InferenceClient, messages: list[dict[str, str]], model: inference_pb2.ModelSelection,
          parameters: inference_pb2.GenerationParameters, what: str) -> str:
    reply = _call(what, "inference", lambda: client.chat(
        messages, adapter=model.adapter, fallback_to_base=model.fallback_to_base, retrieval=False, parameters=parameters
    ))
    return reply.message.content


def content_words(text: str) -> set[str]:
    """Lower-cased content words, plural 's' dropped, for overlap measures."""
    return {word.rstrip("s") for word in _CONTENT_WORD.findall(text.lower()) if word not in _STOPWORDS}


def faithfulness(turns: list[str], passage: str) -> float:
    """Share of the tutor's content words that occur in the passage (0 when it uses none)."""
    used = set().union(*(content_words(turn) for turn in turns)) if turns else set()
    if not used:
        return 0.0
    return len(used & content_words(passage)) / len(used)


def repetition(text: str) -> float:
    """Share of the word 4-grams of `text` that repeat an earlier one (0 = none; loops approach 1)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def degenerate_turn(conversation: list[dict[str, str]]) -> str | None:
    """Why a generated conversation is a decoding loop, or None."""
    for position, turn in enumerate(conversation):
        share = repetition(turn["content"])
        if share > _MAX_REPETITION:
            return f"turn {position} ({turn['role']}) repeats itself ({share:.0%} of its 4-grams are repeats): {turn['content'][:_QUOTE_CHARS]!r}"
    return None


# JSON Schemas of the turns, enforced token by token by the embedded engine (response_format). One line
# each; a question ends with exactly one question mark, so a tutor turn asks one question at a time.
_QUESTION_PATTERN = r"^[^?\n]{8,240}\?$"
TURN_SCHEMAS: dict[str, dict[str, Any]] = {
    key: {"type": "object", "properties": {key: {"type": "string", "pattern": pattern}}, "required": [key],
          "additionalProperties": False}
    for key, pattern in (("question", _QUESTION_PATTERN), ("reply", _QUESTION_PATTERN), ("answer", r"^[^\n]{2,240}$"))
}
_TURN_TOKENS_OF = {"question": 64, "reply": 96, "answer": 64}


class TurnWriter(Protocol):
    """Writes one turn as a JSON document valid against `schema`: the platform's inference service, or
    a teacher endpoint (datasets.teacher)."""

    def write(self, messages: list[dict[str, str]], schema: dict[str, Any], name: str, max_tokens: int, what: str) -> str: ...


@dataclass
class InferenceWriter:
    """Turns from the platform's inference service."""

    client: InferenceClient
    model: inference_pb2.ModelSelection
    parameters: inference_pb2.GenerationParameters = field(default_factory=inference_pb2.GenerationParameters)

    def write(self, messages: list[dict[str, str]], schema: dict[str, Any], name: str, max_tokens: int, what: str) -> str:
        parameters = inference_pb2.GenerationParameters()
        parameters.CopyFrom(self.parameters)
        parameters.max_tokens = parameters.max_tokens or max_tokens
        parameters.response_format.CopyFrom(inference_pb2.ResponseFormat(
            type=inference_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=json.dumps(schema), name=name))
        return _chat(self.client, messages, self.model, parameters, what)


def write_turn(writer: TurnWriter, messages: list[dict[str, str]], key: str, what: str) -> tuple[str, str | None]:
    """(text of the turn, None) or ("", why the reply is unusable)."""
    reply = writer.write(messages, TURN_SCHEMAS[key], key, _TURN_TOKENS_OF[key], what)
    try:
        value = json.loads(reply)
    except json.JSONDecodeError:
        return "", f"the {key} turn is not a JSON document (cut off?): {reply.strip()[:_QUOTE_CHARS]!r}"
    text = value.get(key) if isinstance(value, dict) else None
    if not isinstance(text, str) or not text.strip():
        return "", f"the {key} turn has no {key!r} text: {reply.strip()[:_QUOTE_CHARS]!r}"
    return text.strip(), None


def tutor_turn_problem(text: str) -> tuple[str, str] | None:
    """(why, kind) when a tutor turn is not Socratic enough to keep: it hands over the answer, or it
    does not end by asking the student something."""
    if reveals_answer(text):
        return f"the tutor turn reveals the answer: {text[:_QUOTE_CHARS]!r}", "reveals_answer"
    if not text.rstrip().endswith("?"):
        return f"the tutor turn does not end with a question: {text[:_QUOTE_CHARS]!r}", "no_question"
    return None


def write_dialogue(
    writer: TurnWriter,
    question: list[dict[str, str]],
    tutor_system: str,
    student_answer: Callable[[str], list[dict[str, str]]],
    exchanges: int,
    what: str,
) -> tuple[list[dict[str, str]], str | None, str]:
    """A dialogue written turn by turn with focused prompts: (turns, None, "") or ([], why, kind of drop).
    `question` asks for the opening student question; `student_answer(tutor turn)` for a follow-up."""
    text, problem = write_turn(writer, question, "question", what)
    if problem:
        return [], problem, "unparseable"
    turns = [{"role": "user", "content": text}]
    for exchange in range(exchanges):
        text, problem = write_turn(writer, [{"role": "system", "content": tutor_system}, *turns], "reply", what)
        if problem:
            return [], f"exchange {exchange + 1}: {problem}", "unparseable"
        rejected = tutor_turn_problem(text)
        if rejected:
            return [], f"exchange {exchange + 1}: {rejected[0]}", rejected[1]
        turns.append({"role": "assistant", "content": text})
        if exchange + 1 < exchanges:
            text, problem = write_turn(writer, student_answer(text), "answer", what)
            if problem:
                return [], f"exchange {exchange + 2}: {problem}", "unparseable"
            turns.append({"role": "user", "content": text})
    loop = degenerate_turn(turns)
    if loop:
        return [], loop, "degenerate"
    return turns, None, ""


def _varied(parameters: inference_pb2.GenerationParameters, attempt: int) -> inference_pb2.GenerationParameters:
    """Past the question starters, greedy decoding would repeat earlier dialogues: sample instead
    (seeded by the attempt, so a build stays reproducible) unless the request chose its own sampling."""
    varied = inference_pb2.GenerationParameters()
    varied.CopyFrom(parameters)
    if attempt >= len(prompts.QUESTION_STARTERS) and not varied.HasField("temperature"):
        varied.temperature = 0.7
        varied.seed = attempt
    return varied


@dataclass
class SyntheticSource:
    """Socratic dialogues about `topic`, written turn by turn by the model behind the inference service
    (or by a teacher endpoint)."""

    inference: InferenceClient
    topic: str
    num_conversations: int
    num_exchanges: int
    model: inference_pb2.ModelSelection = field(default_factory=inference_pb2.ModelSelection)
    generation: inference_pb2.GenerationParameters = field(default_factory=inference_pb2.GenerationParameters)
    teacher: Teacher | None = None

    def __post_init__(self) -> None:
        if not self.topic.strip():
            raise InvalidArgument("synthetic source needs a topic (or 'general' for all subjects)")
        if not 1 <= self.num_conversations <= MAX_CONVERSATIONS:
            raise InvalidArgument(f"num_conversations must be 1..{MAX_CONVERSATIONS}")
        if not 1 <= self.num_exchanges <= MAX_EXCHANGES:
            raise InvalidArgument(f"num_exchanges must be 1..{MAX_EXCHANGES}")

    @property
    def name(self) -> str:
        return f"synthetic:{self.topic}"

    def parameters(self) -> dict[str, Any]:
        return {
            "kind": "synthetic",
            "topic": self.topic,
            "num_conversations": self.num_conversations,
            "num_exchanges": self.num_exchanges,
            "model": MessageToDict(self.model, preserving_proto_field_name=True),
            "generation": MessageToDict(self.generation, preserving_proto_field_name=True),
            **({"teacher": self.teacher.describe()} if self.teacher else {}),
        }

    def _writer(self, attempt: int) -> TurnWriter:
        if self.teacher is not None:
            return self.teacher.writer(_varied(self.generation, attempt))
        return InferenceWriter(self.inference, self.model, _varied(self.generation, attempt))

    def read(self, progress: Progress) -> SourceResult:
        result = SourceResult(name=self.name, format="synthetic", records_read=0, parameters=self.parameters())
        metadata = {"subject": self.topic, "teaching_style": "socratic", "origin": "synthetic"}
        subject = prompts.synthetic_subject(self.topic)
        tutor_system = prompts.TUTOR_SYSTEM.format(TOPIC=subject)

        def student_answer(tutor: str) -> list[dict[str, str]]:
            return [{"role": "system", "content": prompts.STUDENT_REPLY_SYSTEM},
                    {"role": "user", "content": prompts.STUDENT_ANSWER_TEMPLATE.format(TOPIC=subject, QUESTION=tutor)}]

        # Dialogues that are dropped still count, so a model that never writes a usable one cannot loop forever.
        for attempt in range(2 * self.num_conversations):
            if len(result.records) >= self.num_conversations:
                break
            progress.check_cancelled()
            starter = prompts.QUESTION_STARTERS[attempt % len(prompts.QUESTION_STARTERS)]
            question = [{"role": "system", "content": prompts.STUDENT_QUESTION_SYSTEM},
                        {"role": "user", "content": prompts.SYNTHETIC_QUESTION_TEMPLATE.format(TOPIC=subject, STARTER=starter)}]
            turns, problem, kind = write_dialogue(
                self._writer(attempt), question, tutor_system, student_answer, self.num_exchanges, "synthetic generation")
            if problem:
                result.issues.append(Issue(self.name, result.records_read, f"attempt {attempt}: {problem}", kind))
            else:
                source = {"kind": "synthetic", "topic": self.topic, "attempt": attempt}
                result.records.append((result.records_read, {"conversations": turns, "metadata": dict(metadata), "source": source}))
            result.records_read += 1
            progress.progress(
                f"{self.name}: attempt {attempt + 1} " + (f"dropped: {problem}" if problem else "gave a dialogue"),
                step=len(result.records),
                total_steps=self.num_conversations,
            )
        return result


@dataclass
class Chunk:
    document_id: str
    chunk_index: int
    source: str
    text: str
    metadata: dict[str, str]


@dataclass
class DocumentSource:
    """Grounded Socratic dialogues about ingested chunks selected by metadata filters."""

    retrieval: RetrievalClient
    inference: InferenceClient
    filters: list[retrieval_pb2.MetadataFilter] = field(default_factory=list)
    max_chunks: int = DEFAULT_MAX_CHUNKS
    exchanges: int = DEFAULT_DOCUMENT_EXCHANGES
    model: inference_pb2.ModelSelection = field(default_factory=inference_pb2.ModelSelection)
    min_faithfulness: float = DEFAULT_MIN_FAITHFULNESS
    teacher: Teacher | None = None

    def __post_init__(self) -> None:
        self.max_chunks = self.max_chunks or DEFAULT_MAX_CHUNKS
        self.exchanges = self.exchanges or DEFAULT_DOCUMENT_EXCHANGES
        if not 1 <= self.max_chunks <= 1000:
            raise InvalidArgument("documents.max_chunks must be 1..1000")
        if not 1 <= self.exchanges <= MAX_EXCHANGES:
            raise InvalidArgument(f"documents.exchanges must be 1..{MAX_EXCHANGES}")
        if not 0 <= self.min_faithfulness <= 1:
            raise InvalidArgument("documents.min_faithfulness must be in [0, 1]")

    @property
    def name(self) -> str:
        described = ",".join(f"{f.field}={MessageToDict(f).get('equals', '…')}" for f in self.filters)
        return f"documents:{described or 'all'}"

    def parameters(self) -> dict[str, Any]:
        return {
            "kind": "documents",
            "filters": [MessageToDict(f, preserving_proto_field_name=True) for f in self.filters],
            "max_chunks": self.max_chunks,
            "exchanges": self.exchanges,
            "min_faithfulness": self.min_faithfulness,
            "model": MessageToDict(self.model, preserving_proto_field_name=True),
            **({"teacher": self.teacher.describe()} if self.teacher else {}),
        }

    def chunks(self) -> list[Chunk]:
        """The first `max_chunks` chunks of the matching documents, in document id then chunk order."""
        documents: list[retrieval_pb2.DocumentInfo] = _call("the document source", "retrieval", lambda: list(self.retrieval.documents(self.filters)))
        selected: list[Chunk] = []
        for document in sorted(documents, key=lambda d: d.document_id):
            reply = _call(
                "the document source",
                "retrieval",
                lambda document_id=document.document_id: self.retrieval.get_document(document_id, include_chunks=True),
            )
            info = reply.document
            metadata = {"category": info.metadata.category, "topic": info.metadata.topic, **dict(info.metadata.extra)}
            for chunk in sorted(reply.chunks, key=lambda c: c.chunk_index):
                if len(selected) >= self.max_chunks:
                    return selected
                if chunk.text.strip():
                    selected.append(
                        Chunk(info.document_id, chunk.chunk_index, info.metadata.source or info.filename, chunk.text, metadata)
                    )
        return selected

    def read(self, progress: Progress) -> SourceResult:
        writer = self.teacher.writer() if self.teacher else InferenceWriter(self.inference, self.model)
        chunks = self.chunks()
        if not chunks:
            raise InvalidArgument(
                f"no ingested chunk matches {self.name}: ingest documents first (`tutorforge ingest`) or relax the filter"
            )
        result = SourceResult(name=self.name, format="documents", records_read=len(chunks), parameters=self.parameters())
        for index, chunk in enumerate(chunks):
            progress.check_cancelled()
            record, problem, kind = self._dialogue(writer, chunk, index)
            if problem:
                result.issues.append(Issue(self.name, index, problem, kind))
            else:
                result.records.append((index, record))
            progress.progress(
                f"{self.name}: chunk {index + 1}/{len(chunks)} ({chunk.source} #{chunk.chunk_index})"
                + (f" dropped: {problem}" if problem else ""),
                step=index + 1,
                total_steps=len(chunks),
            )
        return result

    def _dialogue(self, writer: TurnWriter, chunk: Chunk, index: int) -> tuple[dict[str, Any], str | None, str]:
        """(record, None, "") or ({}, why it was dropped, kind of drop)."""
        starter = prompts.QUESTION_STARTERS[index % len(prompts.QUESTION_STARTERS)]
        question = [{"role": "system", "content": prompts.STUDENT_QUESTION_SYSTEM},
                    {"role": "user", "content": prompts.GROUNDED_QUESTION_TEMPLATE.format(PASSAGE=chunk.text, STARTER=starter)}]
        system = prompts.GROUNDED_TUTOR_SYSTEM.format(PASSAGE=chunk.text)

        def student_answer(tutor: str) -> list[dict[str, str]]:
            return [{"role": "system", "content": prompts.STUDENT_REPLY_SYSTEM},
                    {"role": "user", "content": prompts.STUDENT_FOLLOW_UP_TEMPLATE.format(QUESTION=tutor, PASSAGE=chunk.text)}]

        turns, problem, kind = write_dialogue(writer, question, system, student_answer, self.exchanges, "grounded dialogue generation")
        if problem:
            return {}, problem, kind
        score = faithfulness([t["content"] for t in turns if t["role"] == "assistant"], chunk.text)
        if score < self.min_faithfulness:
            said = " / ".join(t["content"] for t in turns if t["role"] == "assistant")
            return {}, (
                f"unfaithful to the chunk: {score:.0%} of the tutor's content words are in it "
                f"(minimum {self.min_faithfulness:.0%}); tutor said {said[:_QUOTE_CHARS]!r}"
            ), "unfaithful"
        subject = chunk.metadata.get("subject") or chunk.metadata.get("category") or chunk.metadata.get("topic") or ""
        record = {
            "conversations": [{"role": "system", "content": system}, *turns],
            "metadata": {k: v for k, v in {"subject": subject, "teaching_style": "socratic", "origin": "documents",
                                           "grade_level": chunk.metadata.get("grade_level", "")}.items() if v},
            "source": {
                "kind": "documents",
                "document_id": chunk.document_id,
                "chunk_index": chunk.chunk_index,
                "source": chunk.source,
                "faithfulness": round(score, 3),
            },
        }
        return record, None, ""
