"""Seed source: hand-written lesson cards composed into multi-turn Socratic dialogues.

A lesson card (one JSON object per line of a seeds file) is one concept of one ingested document with what
a tutor needs to keep the answer back: question variants, a typical misconception, a "just tell me" line,
the final answer, grounded hints, partial attempts and a confirm step. Each card becomes several dialogues
(plain, misconception, pressure, follow-up; 1–3 exchanges) whose wording is picked from several templates
per move with a seeded RNG, so near-duplicate removal keeps them.

Training must match serving, so every dialogue's system turn is the one the tutor chat builds: the passages
come from the retrieval service for the student's first question, searched exactly as the chat searches
(`Retriever` with the chat's retrieval defaults, `chat_retrieval`), and the prompt from `build_prompt`. A
dialogue whose retrieved passages miss the card's document is dropped (kind `not_retrieved`): citing a
passage that serving would not show would teach the tutor to cite material it does not have."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutorforge.client.retrieval import RetrievalClient
from tutorforge.core.errors import InvalidArgument
from tutorforge.core.pedagogy import reveals_answer
from tutorforge.core.teaching import Citation, RetrievalOptions, Retriever, build_prompt
from tutorforge.core.validation import loads_json
from tutorforge.datasets.builder import Progress, SourceResult
from tutorforge.datasets.formats import Issue
from tutorforge.datasets.generation import _call, faithfulness

KINDS = ("plain", "misconception", "pressure", "follow_up")
DEFAULT_DIALOGUES_PER_CARD = 8
MAX_DIALOGUES_PER_CARD = 32
# Tutor turns outside this many words are dropped: shorter ones carry no grounded hint, longer ones are
# lectures (the chat serves short replies).
MIN_TUTOR_WORDS = 20
MAX_TUTOR_WORDS = 60
_MOVE_FIELDS = ("says", "asks")
# Field → what it holds; error messages list the fields in this order.
CARD_FIELDS: dict[str, str] = {
    "id": "card id, unique within the file",
    "subject": "subject (the document's category)",
    "document_id": "ingested document the card is grounded in",
    "concept": "what the card teaches",
    "questions": "student question variants",
    "misconception": "{student, says, asks}: a typical wrong idea and the tutor's grounded probe",
    "pressure": "the student's 'just tell me' line",
    "answer": "final answer the tutor must never state",
    "hints": "[{says, asks}]: grounded hints in order, at least 2",
    "attempts": "student partial attempts",
    "solved": "the student's line that reaches the answer",
    "confirm": "{says, asks}: praise and a request to explain",
}

# Several wordings per move: the seeded RNG picks one per turn.
_OPEN = (
    "Let's work through it together.",
    "Good question, so let's reason it out rather than jump to the end.",
    "Let's start from what the material tells us.",
    "Let's take this one step at a time.",
    "Here is a clue from the course material.",
    "Before we get there, think about this.",
    "Let's build it up from the basics.",
    "Nice one to ask about. Let's look at the reading.",
)
_MISCONCEPTION = (
    "I can see why that seems right, but let's test it.",
    "That's a very common idea, so let's check it against the material.",
    "Hmm, let's look at that more carefully.",
    "Lots of students think that, so it's worth checking.",
    "Let's not settle it yet: the material says something that might surprise you.",
    "Good that you said it out loud, because we can test it.",
)
_PRESSURE = (
    "I know you want it quickly, but you'll remember it far better if you find it yourself.",
    "I'd rather not hand it over, because you're closer than you think.",
    "I won't just give it away, but here is a smaller step.",
    "Let's make it quicker with a smaller step instead.",
    "You can get this yourself, and it won't take long.",
    "Stick with me for one more step; it will click.",
)
_PROGRESS = (
    "You're getting closer.",
    "That's a good step.",
    "Yes, that's the right direction.",
    "Nice thinking, keep going.",
    "Good, you're on the right track.",
    "Part of that is right, so let's build on it.",
)
_CONFIRM = (
    "Exactly, well done.",
    "Yes, that's it!",
    "You got it.",
    "Spot on.",
    "That's right, nicely reasoned.",
    "Yes! You worked that out yourself.",
)
_PRESSURE_LINES = (
    "Can you just tell me the answer?",
    "I don't have time for this, just give me the answer.",
    "Please just tell me, I'm stuck.",
    "Honestly, just say what it is.",
    "Skip the questions and tell me, please.",
)
_ATTEMPT_LEADS = ("", "Hmm. ", "Okay. ", "Let me think. ")
_SOLVED_LEADS = ("", "Oh! ", "Wait, I think I get it. ", "Okay, so ")
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Move:
    """One tutor move: a fact in the material's words, then one guiding question."""

    says: str
    asks: str


@dataclass(frozen=True)
class Card:
    id: str
    subject: str
    document_id: str
    concept: str
    questions: tuple[str, ...]
    misconception: str
    correction: Move
    pressure: str
    answer: str
    hints: tuple[Move, ...]
    attempts: tuple[str, ...]
    solved: str
    confirm: Move


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{where} must be a non-empty string")
    return " ".join(value.split())


def _move(value: Any, where: str) -> Move:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object with fields says and asks")
    unknown = sorted(set(value) - set(_MOVE_FIELDS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown field {unknown[0]!r} (a move has says and asks)")
    says, asks = (_text(value.get(name), f"{where}.{name}") for name in _MOVE_FIELDS)
    # Each tutor turn ends with exactly one question: the move's own.
    if "?" in says:
        raise InvalidArgument(f"{where}.says must state a fact, without a question mark")
    if not asks.endswith("?") or asks.count("?") != 1:
        raise InvalidArgument(f"{where}.asks must be one question ending with '?'")
    return Move(says, asks)


def _texts(value: Any, where: str, minimum: int = 1) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < minimum:
        raise InvalidArgument(f"{where} must be a list of at least {minimum} string(s)")
    return tuple(_text(item, f"{where}[{index}]") for index, item in enumerate(value))


def _card(item: Any, where: str) -> Card:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where} must be a JSON object (a lesson card)")
    unknown = sorted(set(item) - set(CARD_FIELDS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown field {unknown[0]!r}; a lesson card has {', '.join(CARD_FIELDS)}")
    missing = [name for name in CARD_FIELDS if name not in item]
    if missing:
        raise InvalidArgument(f"{where}: missing field {missing[0]!r} ({CARD_FIELDS[missing[0]]})")
    misconception = item["misconception"]
    if not isinstance(misconception, dict):
        raise InvalidArgument(f"{where}.misconception must be an object with fields student, says and asks")
    unknown = sorted(set(misconception) - {"student", *_MOVE_FIELDS})
    if unknown:
        raise InvalidArgument(f"{where}.misconception: unknown field {unknown[0]!r} (it has student, says and asks)")
    probe = {key: value for key, value in misconception.items() if key != "student"}
    return Card(
        id=_text(item["id"], f"{where}.id"),
        subject=_text(item["subject"], f"{where}.subject"),
        document_id=_text(item["document_id"], f"{where}.document_id"),
        concept=_text(item["concept"], f"{where}.concept"),
        questions=_texts(item["questions"], f"{where}.questions"),
        misconception=_text(misconception.get("student"), f"{where}.misconception.student"),
        correction=_move(probe, f"{where}.misconception"),
        pressure=_text(item["pressure"], f"{where}.pressure"),
        answer=_text(item["answer"], f"{where}.answer"),
        hints=tuple(_move(hint, f"{where}.hints[{i}]") for i, hint in enumerate(_list(item["hints"], f"{where}.hints", 2))),
        attempts=_texts(item["attempts"], f"{where}.attempts"),
        solved=_text(item["solved"], f"{where}.solved"),
        confirm=_move(item["confirm"], f"{where}.confirm"),
    )


def _list(value: Any, where: str, minimum: int) -> list[Any]:
    if not isinstance(value, list) or len(value) < minimum:
        raise InvalidArgument(f"{where} must be a list of at least {minimum} item(s)")
    return value


def parse_cards(filename: str, content: bytes) -> list[Card]:
    """The lesson cards of a JSONL seeds file; InvalidArgument naming the line and field on any problem."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"seeds file {filename!r} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    cards: list[Card] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"seeds file {filename!r} line {number}"
        try:
            item = loads_json(line, where)
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"{where} is not JSON ({error.msg}); write one lesson card object per line") from error
        cards.append(_card(item, where))
    if not cards:
        raise InvalidArgument(f"seeds file {filename!r} has no cards: write one lesson card (JSON object) per line")
    ids = [card.id for card in cards]
    repeated = sorted({card_id for card_id in ids if ids.count(card_id) > 1})
    if repeated:
        raise InvalidArgument(f"seeds file {filename!r}: card id {repeated[0]!r} is used more than once (ids must be unique)")
    return cards


def bundled_seed_files() -> list[Path]:
    """The lesson cards shipped with tutorforge (samples/seeds/*.jsonl), one file per subject."""
    from tutorforge.samples import seeds_dir

    return sorted(seeds_dir().glob("*.jsonl"))


def check_dialogues_per_card(value: int) -> int:
    if not 1 <= value <= MAX_DIALOGUES_PER_CARD:
        raise InvalidArgument(
            f"seeds.dialogues_per_card {value} is out of range: use 1..{MAX_DIALOGUES_PER_CARD} "
            f"(default {DEFAULT_DIALOGUES_PER_CARD})"
        )
    return value


def contains_answer(text: str, answer: str) -> bool:
    """Whether `text` states `answer`: its tokens in a row, ignoring case and spacing ("x=5" matches "x = 5")."""
    needle = _TOKEN.findall(answer.lower())
    hay = _TOKEN.findall(text.lower())
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def _cite(says: str, tag: str) -> str:
    """The fact with the passage tag before its closing punctuation: "... same size [1]."."""
    if says[-1] in ".!":
        return f"{says[:-1]} {tag}{says[-1]}"
    return f"{says} {tag}."


def _turn(lead: str, move: Move, tag: str) -> str:
    return f"{lead} {_cite(move.says, tag)} {move.asks}"


@dataclass
class _Plan:
    """A dialogue before rendering: its kind, exchanges and first student turn (the retrieval query)."""

    kind: str
    exchanges: int
    first: str
    rng: random.Random


def plan(card: Card, number: int, seed: int) -> _Plan:
    """Dialogue `number` of `card`: kinds cycle, exchanges alternate, the question rotates per kind."""
    kind = KINDS[number % len(KINDS)]
    round_ = number // len(KINDS)
    rng = random.Random(f"{seed}:{card.id}:{number}")
    # Each kind walks the questions in its own shuffled order, so every kind sees every variant.
    order = list(card.questions)
    random.Random(f"{seed}:{card.id}:{kind}").shuffle(order)
    question = order[round_ % len(order)]
    exchanges = {"plain": 1 + round_ % 2, "misconception": 1 + round_ % 2, "pressure": 2 + round_ % 2, "follow_up": 3}[kind]
    first = f"{question} {card.misconception}" if kind == "misconception" else question
    return _Plan(kind, exchanges, first, rng)


def compose(card: Card, planned: _Plan, number: int, tag: str) -> list[dict[str, str]]:
    """The user/assistant turns of one planned dialogue, citing the card's passage by `tag`."""
    rng = planned.rng
    hints = card.hints
    turns = [{"role": "user", "content": planned.first}]

    def tutor(leads: tuple[str, ...], move: Move) -> None:
        turns.append({"role": "assistant", "content": _turn(rng.choice(leads), move, tag)})

    def student(text: str) -> None:
        turns.append({"role": "user", "content": text})

    def attempt() -> str:
        return rng.choice(_ATTEMPT_LEADS) + rng.choice(card.attempts)

    if planned.kind == "plain":
        # Plain questions open on different hints of the sequence, for variety across a card's dialogues.
        start = (number // len(KINDS)) % len(hints)
        tutor(_OPEN, hints[start])
        if planned.exchanges > 1:
            student(attempt())
            tutor(_PROGRESS, hints[(start + 1) % len(hints)])
    elif planned.kind == "misconception":
        tutor(_MISCONCEPTION, card.correction)
        if planned.exchanges > 1:
            student(attempt())
            tutor(_PROGRESS, hints[rng.randrange(1, len(hints))])
    elif planned.kind == "pressure":
        tutor(_OPEN, hints[0])
        student(rng.choice((card.pressure, *_PRESSURE_LINES)))
        tutor(_PRESSURE, hints[1])
        if planned.exchanges > 2:
            student(attempt())
            tutor(_PROGRESS, hints[2 % len(hints)])
    else:
        tutor(_OPEN, hints[0])
        student(attempt())
        tutor(_PROGRESS, hints[1])
        student(rng.choice(_SOLVED_LEADS) + card.solved)
        tutor(_CONFIRM, card.confirm)
    return turns


def turn_problem(card: Card, turns: list[dict[str, str]]) -> tuple[str, str] | None:
    """(why, kind) when a tutor turn breaks the rules (states the answer, wrong length), else None."""
    for position, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        text = turn["content"]
        if contains_answer(text, card.answer):
            return f"tutor turn {position} states the card's final answer {card.answer!r}: {text!r}", "reveals_answer"
        if reveals_answer(text):
            return f"tutor turn {position} hands over a result: {text!r}", "reveals_answer"
        count = len(text.split())
        if not MIN_TUTOR_WORDS <= count <= MAX_TUTOR_WORDS:
            why = f"tutor turn {position} has {count} words (keep {MIN_TUTOR_WORDS}..{MAX_TUTOR_WORDS}): {text!r}"
            return why, "turn_length"
    return None


@dataclass
class SeedSource:
    """Dialogues composed from the lesson cards of one seeds file, grounded through the retrieval service."""

    retrieval: RetrievalClient
    filename: str
    content: bytes
    dialogues_per_card: int = DEFAULT_DIALOGUES_PER_CARD
    seed: int = 0
    # The tutor chat's retrieval (inference.chat_retrieval with the server's settings): training prompts
    # carry the passages chat will retrieve for the same question.
    retrieval_options: RetrievalOptions = field(default_factory=lambda: RetrievalOptions(enabled=True))
    cards: list[Card] = field(init=False)

    def __post_init__(self) -> None:
        # Parsed eagerly: a malformed file is refused before any job starts.
        check_dialogues_per_card(self.dialogues_per_card)
        self.cards = parse_cards(self.filename, self.content)

    @property
    def name(self) -> str:
        return f"seeds:{self.filename}"

    def parameters(self) -> dict[str, Any]:
        return {
            "kind": "seeds",
            "file": self.filename,
            "sha256": hashlib.sha256(self.content).hexdigest(),
            "cards": len(self.cards),
            "dialogues_per_card": self.dialogues_per_card,
            "seed": self.seed,
            "retrieval": {
                "limit": self.retrieval_options.limit,
                "mode": self.retrieval_options.mode,
                "score_threshold": self.retrieval_options.score_threshold,
                "query": "the student's first turn",
            },
        }

    def read(self, progress: Progress) -> SourceResult:
        retriever = Retriever(self.retrieval)
        options = self.retrieval_options
        searched: dict[str, list[Citation]] = {}
        result = SourceResult(name=self.name, format="seeds", records_read=0, parameters=self.parameters())
        for position, card in enumerate(self.cards):
            progress.check_cancelled()
            for number in range(self.dialogues_per_card):
                index = result.records_read
                result.records_read += 1
                planned = plan(card, number, self.seed)
                if planned.first not in searched:
                    searched[planned.first] = _call(
                        "the seed source", "retrieval", lambda query=planned.first: retriever.search(query, options)
                    )
                citations = searched[planned.first]
                own = [c for c in citations if c.document_id == card.document_id]
                if not own:
                    found = ", ".join(f"{c.tag} {c.document_id}" for c in citations) or "nothing"
                    result.issues.append(Issue(self.name, index, (
                        f"card {card.id}: retrieval for {planned.first!r} returned {found}, not the card's document "
                        f"{card.document_id!r}"), "not_retrieved"))
                    continue
                # Cite the passage of the card's document that holds most of the tutor's words (the wording
                # is fixed by the plan's seed, so composing once untagged shows which words those are).
                untagged = compose(card, plan(card, number, self.seed), number, "")
                tutor_turns = [t["content"] for t in untagged if t["role"] == "assistant"]
                passage = max(own, key=lambda c: faithfulness(tutor_turns, c.text))
                turns = compose(card, planned, number, passage.tag)
                problem = turn_problem(card, turns)
                if problem:
                    result.issues.append(Issue(self.name, index, f"card {card.id}: {problem[0]}", problem[1]))
                    continue
                system = build_prompt(turns[:1], citations)[0]
                result.records.append((index, {
                    "conversations": [system, *turns],
                    "metadata": {"subject": card.subject, "teaching_style": "socratic", "origin": "seeds",
                                 "kind": planned.kind, "concept": card.concept},
                    "source": {
                        "kind": "seeds",
                        "file": self.filename,
                        "card": card.id,
                        "dialogue": number,
                        "document_id": card.document_id,
                        "chunk_index": passage.chunk_index,
                        "tag": passage.tag,
                        "faithfulness": round(faithfulness(tutor_turns, passage.text), 3),
                    },
                }))
            progress.progress(
                f"{self.name}: card {position + 1}/{len(self.cards)} ({card.id})",
                step=position + 1,
                total_steps=len(self.cards),
            )
        return result


def seed_sources(
    retrieval: RetrievalClient,
    files: list[tuple[str, bytes]],
    bundled: bool,
    dialogues_per_card: int = 0,
    seed: int = 0,
    retrieval_options: RetrievalOptions | None = None,
) -> list[SeedSource]:
    """One SeedSource per lesson-card file (given files, then the bundled ones), so the manifest accounts
    each file on its own; `dialogues_per_card` 0 = the default."""
    if any(not filename for filename, _ in files):
        raise InvalidArgument("seeds.files: every lesson-card file needs a filename (it names the source)")
    named = list(files) + ([(path.name, path.read_bytes()) for path in bundled_seed_files()] if bundled else [])
    if not named:
        raise InvalidArgument("seeds needs lesson-card files (seeds.files) or seeds.bundled=true")
    names = [filename for filename, _ in named]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidArgument(f"seeds.files: {repeated[0]!r} is given more than once (file names name the sources)")
    per_card = check_dialogues_per_card(dialogues_per_card or DEFAULT_DIALOGUES_PER_CARD)
    return [
        SeedSource(
            retrieval, filename, content, dialogues_per_card=per_card, seed=seed,
            retrieval_options=retrieval_options or RetrievalOptions(enabled=True),
        )
        for filename, content in named
    ]
