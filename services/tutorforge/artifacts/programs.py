"""Teaching programs: the one representation that the optimizer scores, evaluations run and chat serves.

A program is plain JSON — instructions (the tutor's system prompt), demonstrations (example student turns
and tutor replies, placed before the conversation), LM settings, the LoRA adapter it was compiled against
and the base model it is for. The inference service executes it (`tutorforge.core.teaching.build_prompt`)
the same way whether the caller is a chatbot, an evaluation or an optimizer trial, so what is served is
what was scored.

Stored under `programs/<name>/<version>/`: `program.json` (the program), then `info.json` (lineage and
scores; written last, so a version without it is an interrupted write and is ignored). Nothing is pickled.
`programs/<name>/served.json` names the version chat uses for a bare `NAME` (promotion); without it, the
latest version is served."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tutorforge.artifacts.store import VERSION, ArtifactStore, complete_versions, next_version
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.names import validate_name

PREFIX = "programs"
PROGRAM_FILE = "program.json"
INFO_FILE = "info.json"
SERVED_FILE = "served.json"
FORMAT = "tutorforge.program/v1"
MAX_DEMONSTRATIONS = 16
MAX_INSTRUCTION_CHARS = 8000
MAX_DEMONSTRATION_CHARS = 4000
# OpenAI's range for frequency_penalty and presence_penalty: -MAX_PENALTY..MAX_PENALTY (0 = none).
MAX_PENALTY = 2.0


def penalty_in_range(value: float) -> bool:
    return math.isfinite(value) and -MAX_PENALTY <= value <= MAX_PENALTY


@dataclass(frozen=True)
class Demonstration:
    """One example exchange: the student's turn and the tutor's reply to it."""

    query: str
    response: str

    def turns(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.query}, {"role": "assistant", "content": self.response}]


@dataclass(frozen=True)
class LmSettings:
    # 0 = the caller's (or the server's) default.
    max_tokens: int = 0
    temperature: float = 0.0
    # OpenAI's frequency penalty (-2..2; 0 = none): a small model's greedy replies loop without one.
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class TeachingProgram:
    instructions: str
    demonstrations: tuple[Demonstration, ...] = ()
    lm: LmSettings = field(default_factory=LmSettings)
    # LoRA adapter it was compiled against; empty = the base model.
    adapter: str = ""
    # Base model it was compiled for; empty = any.
    base_model: str = ""
    # "name@version" once stored; empty for an inline (unsaved) program.
    name: str = ""

    def __post_init__(self) -> None:
        if not self.instructions.strip():
            raise InvalidArgument("program.instructions is empty: give the tutor's system prompt")
        if len(self.instructions) > MAX_INSTRUCTION_CHARS:
            raise InvalidArgument(f"program.instructions is longer than {MAX_INSTRUCTION_CHARS} characters")
        if len(self.demonstrations) > MAX_DEMONSTRATIONS:
            raise InvalidArgument(f"program.demonstrations has {len(self.demonstrations)}; at most {MAX_DEMONSTRATIONS}")
        for index, demo in enumerate(self.demonstrations):
            if not demo.query.strip() or not demo.response.strip():
                raise InvalidArgument(f"program.demonstrations[{index}] needs a non-empty query and response")
            if len(demo.query) + len(demo.response) > MAX_DEMONSTRATION_CHARS:
                raise InvalidArgument(
                    f"program.demonstrations[{index}] is longer than {MAX_DEMONSTRATION_CHARS} characters"
                )
        if self.lm.max_tokens < 0:
            raise InvalidArgument(f"program.lm.max_tokens {self.lm.max_tokens} must be >= 0")
        if not 0 <= self.lm.temperature <= 10:
            raise InvalidArgument(f"program.lm.temperature {self.lm.temperature} is out of range 0..10")
        if not penalty_in_range(self.lm.frequency_penalty):
            raise InvalidArgument(
                f"program.lm.frequency_penalty {self.lm.frequency_penalty} is out of range -{MAX_PENALTY:g}..{MAX_PENALTY:g}"
            )
        if self.adapter:
            validate_name(self.adapter, "program.adapter")

    def demonstration_turns(self) -> list[dict[str, str]]:
        return [turn for demo in self.demonstrations for turn in demo.turns()]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("name")
        return {"format": FORMAT, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], name: str = "") -> TeachingProgram:
        if not isinstance(data, dict) or data.get("format", FORMAT) != FORMAT:
            raise InvalidArgument(f"program.format must be {FORMAT!r}: this is not a tutorforge program document")
        try:
            return cls(
                instructions=str(data["instructions"]),
                demonstrations=tuple(
                    Demonstration(str(d["query"]), str(d["response"])) for d in data.get("demonstrations") or ()
                ),
                lm=LmSettings(**(data.get("lm") or {})),
                adapter=str(data.get("adapter") or ""),
                base_model=str(data.get("base_model") or ""),
                name=name,
            )
        except (KeyError, TypeError) as error:
            raise InvalidArgument(f"program document is malformed: {error}") from error


@dataclass
class ProgramInfo:
    """Lineage and scores of a stored program version."""

    name: str
    version: str
    optimizer: str
    dataset: str
    dataset_version: str
    # LoRA adapter the program was compiled against; empty = base model.
    adapter: str
    base_model: str = ""
    # The metric the optimizer maximised, e.g. "pedagogical" or "judge".
    metric: str = "pedagogical"
    baseline_score: float = 0.0
    optimized_score: float = 0.0
    lm_calls: int = 0
    lm_tokens: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    # Benchmark summary (scores with 95% intervals), once the program was benchmarked.
    benchmark: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    # Why compilation stopped early (a budget), empty when it ran to the end.
    stopped_early: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{PREFIX}/{self.name}/{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgramInfo:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def parse_reference(reference: str, field_name: str = "program") -> tuple[str, str]:
    """`NAME` or `NAME@VERSION` → (name, version or "")."""
    name, at, version = reference.strip().partition("@")
    validate_name(name, f"{field_name} name")
    if at and not VERSION.match(version):
        raise InvalidArgument(f"{field_name} version {version!r} is not valid: use v1, v2, ...")
    return name, version


class ProgramRepository:
    def __init__(self, store: ArtifactStore):
        self.store = store
        self._lock = threading.Lock()

    def save(self, program: TeachingProgram, info: ProgramInfo) -> ProgramInfo:
        """Store `program` as the next version of `info.name`; returns the info with its version set."""
        validate_name(info.name, "program name")
        with self._lock:
            info.version = next_version(self.store, f"{PREFIX}/{info.name}")
            info.created_at = time.time()
            self.store.write_json(f"{info.key}/{PROGRAM_FILE}", program.to_json())
            self.store.write_json(f"{info.key}/{INFO_FILE}", asdict(info))
        return info

    def update_info(self, info: ProgramInfo) -> None:
        """Rewrite a stored version's info (e.g. to add its benchmark scores); the program is untouched."""
        self.get(info.name, info.version)
        self.store.write_json(f"{info.key}/{INFO_FILE}", asdict(info))

    def get(self, name: str, version: str = "") -> ProgramInfo:
        """A version's info; no version = the served one (promoted, else the latest)."""
        validate_name(name, "program name")
        if version and not VERSION.match(version):
            raise InvalidArgument(f"program version {version!r} is not valid: use v1, v2, ...")
        versions = self.versions(name)
        version = version or self.served_version(name, versions)
        if not version or version not in versions:
            raise NotFound(
                f"program {name}{'@' + version if version else ''} does not exist: "
                "`tutorforge programs list` shows the saved ones, `tutorforge optimize` makes one"
            )
        return ProgramInfo.from_json(self.store.read_json(f"{PREFIX}/{name}/{version}/{INFO_FILE}"))

    def load(self, reference: str) -> tuple[ProgramInfo, TeachingProgram]:
        """`NAME` (the served version) or `NAME@VERSION`."""
        name, version = parse_reference(reference)
        info = self.get(name, version)
        program = TeachingProgram.from_json(self.store.read_json(f"{info.key}/{PROGRAM_FILE}"), name=info.ref)
        return info, program

    def document(self, info: ProgramInfo) -> dict[str, Any]:
        return self.store.read_json(f"{info.key}/{PROGRAM_FILE}")

    def list(self) -> list[ProgramInfo]:
        """The served version of every program, by name."""
        infos = []
        for name in self.store.list(PREFIX):
            versions = self.versions(name)
            if versions:
                infos.append(self.get(name, self.served_version(name, versions)))
        return infos

    def served_version(self, name: str, versions: list[str] | None = None) -> str:
        versions = self.versions(name) if versions is None else versions
        key = f"{PREFIX}/{name}/{SERVED_FILE}"
        if self.store.exists(key):
            served = str(self.store.read_json(key).get("version", ""))
            if served in versions:
                return served
        return versions[-1] if versions else ""

    def set_served(self, name: str, version: str) -> None:
        self.get(name, version)
        self.store.write_json(f"{PREFIX}/{name}/{SERVED_FILE}", {"version": version, "at": time.time()})

    def versions(self, name: str) -> list[str]:
        return complete_versions(self.store, f"{PREFIX}/{name}", INFO_FILE)
