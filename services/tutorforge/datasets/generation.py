"""Generated sources: synthetic Socratic dialogues about a topic, and dialogues grounded in ingested
document chunks. Both talk to the inference and retrieval services over gRPC only."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from tutorforge.datasets import prompts
from tutorforge.datasets.builder import Progress, SourceResult
from tutorforge.datasets.dedup import words
from tutorforge.datasets.formats import Issue
from tutorforge.datasets.replies import parse_conversations
from tutorforge.v1 import common_pb2, inference_pb2, inference_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc

# A small model writes one or two good conversations per reply; more in one go degrade quickly.
CONVERSATIONS_PER_REPLY = 2
MAX_CONVERSATIONS = 200
MAX_EXCHANGES = 8
DEFAULT_MAX_CHUNKS = 20
DEFAULT_DOCUMENT_EXCHANGES = 2
DEFAULT_MIN_FAITHFULNESS = 0.3
_SYNTHETIC_TOKENS_PER_EXCHANGE = 120
_TURN_TOKENS = 96
_EXAMPLE_COPY_JACCARD = 0.5
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


def _call(what: str, service: str, function: Any, request: Any) -> Any:
    try:
        return function(request)
    except grpc.RpcError as error:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
            raise FailedPrecondition(
                f"{what} needs the {service} service, which is not reachable ({code.name}: {error.details()}); "
                f"host it with `tutorforge serve {service}` or set TUTORFORGE_ADDRESSES__{service.upper()}"
            ) from error
        # Keep the downstream status (e.g. an unknown adapter, a full queue) and say which call it was.
        kind = _DOWNSTREAM_ERRORS.get(code, FailedPrecondition)
        raise kind(f"{what}: the {service} service answered {code.name}: {error.details()}") from error


def _chat(stub: inference_pb2_grpc.InferenceServiceStub, messages: list[dict[str, str]], model: inference_pb2.ModelSelection,
          parameters: inference_pb2.GenerationParameters, what: str) -> str:
    request = inference_pb2.ChatRequest(
        messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages],
        model=model,
        parameters=parameters,
    )
    return _call(what, "inference", stub.Chat, request).message.content


def content_words(text: str) -> set[str]:
    """Lower-cased content words, plural 's' dropped, for overlap measures."""
    return {word.rstrip("s") for word in _CONTENT_WORD.findall(text.lower()) if word not in _STOPWORDS}


def faithfulness(turns: list[str], passage: str) -> float:
    """Share of the tutor's content words that occur in the passage (0 when it uses none)."""
    used = set().union(*(content_words(turn) for turn in turns)) if turns else set()
    if not used:
        return 0.0
    return len(used & content_words(passage)) / len(used)


def copies_example(conversation: list[dict[str, str]]) -> bool:
    """Whether a generated conversation mostly repeats the prompt's worked example."""
    example = set(words(" ".join(turn["content"] for turn in prompts.EXAMPLE_CONVERSATION)))
    written = set(words(" ".join(turn["content"] for turn in conversation)))
    return len(example & written) / len(example | written) >= _EXAMPLE_COPY_JACCARD if written else False


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


@dataclass
class SyntheticSource:
    """Socratic dialogues about `topic` written by the model behind the inference service."""

    channel: grpc.Channel
    topic: str
    num_conversations: int
    num_exchanges: int
    model: inference_pb2.ModelSelection = field(default_factory=inference_pb2.ModelSelection)
    generation: inference_pb2.GenerationParameters = field(default_factory=inference_pb2.GenerationParameters)

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
            "generation": MessageToDict(self._generation(), preserving_proto_field_name=True),
        }

    def _generation(self) -> inference_pb2.GenerationParameters:
        parameters = inference_pb2.GenerationParameters()
        parameters.CopyFrom(self.generation)
        if not parameters.max_tokens:
            parameters.max_tokens = min(1024, 64 + CONVERSATIONS_PER_REPLY * self.num_exchanges * _SYNTHETIC_TOKENS_PER_EXCHANGE)
        return parameters

    def read(self, progress: Progress) -> SourceResult:
        stub = inference_pb2_grpc.InferenceServiceStub(self.channel)
        result = SourceResult(name=self.name, format="synthetic", records_read=0, parameters=self.parameters())
        generation = self._generation()
        metadata = {"subject": self.topic, "teaching_style": "socratic", "origin": "synthetic"}
        # Replies that yield nothing still count, so a model that never produces JSON cannot loop forever.
        attempts = 2 * math.ceil(self.num_conversations / CONVERSATIONS_PER_REPLY)
        for attempt in range(attempts):
            wanted = self.num_conversations - len(result.records)
            if wanted <= 0:
                break
            progress.check_cancelled()
            batch = min(CONVERSATIONS_PER_REPLY, wanted)
            prompt = prompts.synthetic_prompt(self.topic, batch, self.num_exchanges, variation=attempt)
            reply = _chat(
                stub,
                [{"role": "system", "content": prompts.GENERATOR_SYSTEM}, {"role": "user", "content": prompt}],
                self.model,
                generation,
                "synthetic generation",
            )
            parsed = parse_conversations(reply)
            for reason in parsed.rejected:
                quoted = f"{reason}; reply began {reply.strip()[:_QUOTE_CHARS]!r}"
                result.issues.append(Issue(self.name, result.records_read, f"reply {attempt}: {quoted}", "unparseable"))
                result.records_read += 1
            for conversation in parsed.conversations[:wanted]:
                problem = "copied the prompt's example" if copies_example(conversation) else degenerate_turn(conversation)
                if problem:
                    kind = "unparseable" if problem.startswith("copied") else "degenerate"
                    result.issues.append(Issue(self.name, result.records_read, f"reply {attempt}: {problem}", kind))
                    result.records_read += 1
                    continue
                # Extra exchanges beyond the request are cut; too few are left for validation to judge.
                result.records.append(
                    (
                        result.records_read,
                        {
                            "conversations": conversation[: 2 * self.num_exchanges + (conversation[0]["role"] == "system")],
                            "metadata": dict(metadata),
                            "source": {"kind": "synthetic", "topic": self.topic, "reply": attempt},
                        },
                    )
                )
                result.records_read += 1
            repaired = f", repaired: {', '.join(parsed.repairs)}" if parsed.repairs else ""
            progress.progress(
                f"{self.name}: reply {attempt + 1} gave {len(parsed.conversations)} conversation(s){repaired}",
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

    retrieval: grpc.Channel
    inference: grpc.Channel
    filters: list[retrieval_pb2.MetadataFilter] = field(default_factory=list)
    max_chunks: int = DEFAULT_MAX_CHUNKS
    exchanges: int = DEFAULT_DOCUMENT_EXCHANGES
    model: inference_pb2.ModelSelection = field(default_factory=inference_pb2.ModelSelection)
    min_faithfulness: float = DEFAULT_MIN_FAITHFULNESS

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
        }

    def chunks(self) -> list[Chunk]:
        """The first `max_chunks` chunks of the matching documents, in document id then chunk order."""
        stub = retrieval_pb2_grpc.RetrievalServiceStub(self.retrieval)
        documents: list[retrieval_pb2.DocumentInfo] = []
        token = ""
        while True:
            page = _call(
                "the document source",
                "retrieval",
                stub.ListDocuments,
                retrieval_pb2.ListDocumentsRequest(page_size=100, page_token=token, filters=self.filters),
            )
            documents.extend(page.documents)
            token = page.next_page_token
            if not token:
                break
        selected: list[Chunk] = []
        for document in sorted(documents, key=lambda d: d.document_id):
            reply = _call(
                "the document source",
                "retrieval",
                stub.GetDocument,
                retrieval_pb2.GetDocumentRequest(document_id=document.document_id, include_chunks=True),
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
        stub = inference_pb2_grpc.InferenceServiceStub(self.inference)
        chunks = self.chunks()
        if not chunks:
            raise InvalidArgument(
                f"no ingested chunk matches {self.name}: ingest documents first (`tutorforge ingest`) or relax the filter"
            )
        result = SourceResult(name=self.name, format="documents", records_read=len(chunks), parameters=self.parameters())
        for index, chunk in enumerate(chunks):
            progress.check_cancelled()
            record, problem, kind = self._dialogue(stub, chunk)
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

    def _dialogue(
        self, stub: inference_pb2_grpc.InferenceServiceStub, chunk: Chunk
    ) -> tuple[dict[str, Any], str | None, str]:
        """(record, None, "") or ({}, why it was dropped, kind of drop)."""
        parameters = inference_pb2.GenerationParameters(max_tokens=_TURN_TOKENS)
        what = "grounded dialogue generation"
        question = _chat(
            stub,
            [{"role": "system", "content": prompts.STUDENT_QUESTION_SYSTEM},
             {"role": "user", "content": prompts.STUDENT_QUESTION_TEMPLATE.format(PASSAGE=chunk.text)}],
            self.model, parameters, what,
        ).strip()
        if "?" not in question:
            return {}, f"the model wrote no student question: {question[:_QUOTE_CHARS]!r}", "unparseable"
        system = prompts.GROUNDED_TUTOR_SYSTEM.format(PASSAGE=chunk.text)
        turns = [{"role": "user", "content": question}]
        for exchange in range(self.exchanges):
            tutor = _chat(stub, [{"role": "system", "content": system}, *turns], self.model, parameters, what).strip()
            if not tutor:
                return {}, f"the model wrote an empty tutor turn in exchange {exchange + 1}", "unparseable"
            turns.append({"role": "assistant", "content": tutor})
            if exchange + 1 < self.exchanges:
                reply = _chat(
                    stub,
                    [{"role": "system", "content": prompts.STUDENT_REPLY_SYSTEM},
                     {"role": "user", "content": prompts.STUDENT_FOLLOW_UP_TEMPLATE.format(QUESTION=tutor, PASSAGE=chunk.text)}],
                    self.model, parameters, what,
                ).strip()
                if not reply:
                    return {}, f"the model wrote an empty student turn in exchange {exchange + 2}", "unparseable"
                turns.append({"role": "user", "content": reply})
        loop = degenerate_turn(turns)
        if loop:
            return {}, loop, "degenerate"
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
