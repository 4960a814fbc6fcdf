"""The tutor prompt contract: a Socratic system prompt, retrieved passages with source tags, and citations.

Inference executes it for every chat; the datasets' seed source and the optimizer reproduce it (same
retrieval defaults, same prompt), so an adapter trains on, and a program is scored on, what is served."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from tutorforge.artifacts.programs import TeachingProgram
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, TutorforgeError
from tutorforge.core.settings import InferenceSettings

if TYPE_CHECKING:
    from tutorforge.client.retrieval import RetrievalClient

DEFAULT_SYSTEM_PROMPT = (
    "You are a patient Socratic tutor. Help the student find the answer themselves: ask one guiding "
    "question at a time, start from what they already know, give a hint instead of the full solution, and "
    "ask them to explain their reasoning. When they are right, say so briefly and take them one step "
    "further; when they are wrong, point at the step that needs another look. Keep replies short, clear "
    "and encouraging, and never make up facts."
)
_MATERIAL_HEADER = (
    "Course material for this question (cite a passage by its tag, like [1], when you use it; if the "
    "material does not cover the question, say so):"
)
_NO_MATERIAL = (
    "The course material has nothing on this question: say so, do not make up facts, and ask what the "
    "student already knows about it."
)
# What a reply starts with when retrieval found nothing: said by the service, not left to a small model.
NO_MATERIAL_NOTICE = "I couldn't find this in the course material, so I can't point you to a source. "
# Passages go into the prompt shortened to the sentences nearest the question: prefill on CPU costs ~ms per
# token, and a 512-token chunk covers more than one point. Citations keep the whole text.
_PASSAGE_CHARS = 500
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_FUNCTION_WORDS = frozenset(
    "a an the and or but of to in on at by for with from as is are was were be it its this that what which who how "
    "why do does did i you we they my your can could would should will so not no if".split()
)
ROLES = ("system", "user", "assistant")
MAX_TURNS = 64


@dataclass(frozen=True)
class Citation:
    tag: str
    document_id: str
    chunk_index: int
    source: str
    score: float
    text: str


@dataclass
class RetrievalOptions:
    enabled: bool = False
    # 0 = the retrieval service's default.
    limit: int = 0
    score_threshold: float | None = None
    # tutorforge.v1.MetadataFilter messages, passed through to the retrieval service.
    filters: list[Any] = field(default_factory=list)
    # tutorforge.v1.SearchMode value; 0 = the service's default.
    mode: int = 0


def chat_retrieval(options: RetrievalOptions, settings: InferenceSettings) -> RetrievalOptions:
    """Unset chat retrieval options take the tutor's calibrated defaults (inference.chat_*): the retrieval
    service's own defaults suit search, not a tutor that must cite when it can. Chat and the training set
    (datasets' seed source) both use this, so the adapter trains on the passages it will be served."""
    from tutorforge.v1 import retrieval_pb2

    threshold = options.score_threshold
    if threshold is None and options.mode == 0:
        threshold = settings.chat_score_threshold
    return RetrievalOptions(
        enabled=True,
        limit=options.limit or settings.chat_passages,
        score_threshold=threshold,
        filters=options.filters,
        mode=options.mode or retrieval_pb2.SearchMode.Value(f"SEARCH_MODE_{settings.chat_search_mode.upper()}"),
    )


class Retriever:
    """Searches the retrieval service through the SDK's client (its deadline, retries and domain errors;
    an unreachable service is Unavailable naming the address) and turns hits into citations."""

    def __init__(self, client: RetrievalClient):
        self.client = client

    def search(self, query: str, options: RetrievalOptions) -> list[Citation]:
        try:
            hits = self.client.search(
                query, limit=options.limit, mode=options.mode, filters=options.filters, score_threshold=options.score_threshold
            )
        except TutorforgeError as error:
            if error.code == grpc.StatusCode.UNIMPLEMENTED:
                raise FailedPrecondition(
                    f"no retrieval service at {self.client.connection.address}; host it (`tutorforge serve retrieval "
                    "inference`), set addresses.retrieval, or turn retrieval off for this chat"
                ) from error
            raise
        return [
            Citation(
                tag=f"[{index}]",
                document_id=hit.document_id,
                chunk_index=hit.chunk_index,
                source=hit.metadata.source or hit.document_id,
                score=hit.score,
                text=hit.text,
            )
            for index, hit in enumerate(hits, start=1)
        ]


def validate_messages(messages: list[dict[str, str]]) -> None:
    if not messages:
        raise InvalidArgument("messages is empty: send at least one user turn")
    if len(messages) > MAX_TURNS:
        raise InvalidArgument(f"{len(messages)} turns is too many: send at most {MAX_TURNS}")
    for index, message in enumerate(messages):
        if message["role"] not in ROLES:
            raise InvalidArgument(f"messages[{index}].role {message['role']!r} is not one of {', '.join(ROLES)}")
        if message["role"] == "system" and index != 0:
            raise InvalidArgument(f"messages[{index}] is a system turn: only the first turn may be one")
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise InvalidArgument("the last turn must be the student's (role 'user') and not empty")


def retrieval_query(messages: list[dict[str, str]]) -> str:
    """What to search for: the student's opening question (it sets the topic; follow-ups like "so it's the
    air?" rarely name it) and, in a longer conversation, their latest turn. The tutor training set
    retrieves its passages the same way for every turn of a dialogue."""
    user_turns = [m["content"].strip() for m in messages if m["role"] == "user"]
    return user_turns[0] if len(user_turns) == 1 else f"{user_turns[0]} {user_turns[-1]}"


def build_prompt(
    messages: list[dict[str, str]],
    citations: list[Citation],
    system_prompt: str = "",
    program: TeachingProgram | None = None,
    material_missing: bool = False,
) -> list[dict[str, str]]:
    """The ChatML turns the model sees: system prompt (+ tagged passages), a program's demonstrations,
    the conversation. The one place a tutor prompt is assembled: chat, evaluations, optimizer trials and
    the training set all go through it."""
    conversation = list(messages)
    if conversation[0]["role"] == "system":
        system = conversation.pop(0)["content"]
    else:
        system = system_prompt or (program.instructions if program else "") or DEFAULT_SYSTEM_PROMPT
    if citations:
        query = retrieval_query(conversation) if any(m["role"] == "user" for m in conversation) else ""
        passages = "\n\n".join(f"{c.tag} (source: {c.source})\n{excerpt(c.text, query)}" for c in citations)
        system = f"{system}\n\n{_MATERIAL_HEADER}\n\n{passages}"
    elif material_missing:
        system = f"{system}\n\n{_NO_MATERIAL}"
    demonstrations = program.demonstration_turns() if program else []
    return [{"role": "system", "content": system}, *demonstrations, *conversation]


def excerpt(text: str, query: str, limit: int = _PASSAGE_CHARS) -> str:
    """At most `limit` characters of a passage: its sentences that share the most words with the question,
    in their original order (the passage's start when none does)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    asked = {w for w in _WORD.findall(query.lower()) if w not in _FUNCTION_WORDS}
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    overlap = [len(asked & set(_WORD.findall(s.lower()))) for s in sentences]
    if not any(overlap):
        return text[:limit].rsplit(" ", 1)[0] + " …"
    chosen: set[int] = set()
    used = 0
    for index in sorted(range(len(sentences)), key=lambda i: (-overlap[i], i)):
        if overlap[index] == 0 or used + len(sentences[index]) + 1 > limit:
            continue
        chosen.add(index)
        used += len(sentences[index]) + 1
    if not chosen:
        return sentences[max(range(len(sentences)), key=overlap.__getitem__)][:limit].rsplit(" ", 1)[0] + " …"
    parts, previous = [], -1
    for index in sorted(chosen):
        parts.append(("… " if index != previous + 1 else "") + sentences[index])
        previous = index
    return " ".join(parts) + (" …" if previous != len(sentences) - 1 else "")
