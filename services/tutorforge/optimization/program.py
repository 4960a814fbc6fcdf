"""The teaching program (a DSPy signature and module), the examples it learns from, the DSPy metric
over the pedagogical score, and the versioned program store.

Programs are saved as DSPy JSON state (`Module.dump_state`), never pickled, under
`programs/<name>/<version>/` with `program.json` (the state) and `info.json` (written last: scores,
LM cost, lineage). A version without `info.json` is an interrupted write and is ignored."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy

from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.names import validate_name
from tutorforge.core.storage import ArtifactStore
from tutorforge.optimization.metrics import (
    Embed,
    MetricWeights,
    PedagogicalScore,
    cosine_similarities,
    score_response,
)

PREFIX = "programs"
_VERSION = re.compile(r"^v(\d+)$")
_STATE_FILE = "program.json"
_INFO_FILE = "info.json"
METADATA_KEYS = ("grade_level", "subject", "teaching_style")
# Datasets put grounding material in the system turn after one of these labels.
_MATERIAL_LABEL = re.compile(r"^(context|passage|reference material)\s*:\s*", re.IGNORECASE | re.MULTILINE)


class TeachingSignature(dspy.Signature):
    """You are a patient Socratic tutor. Use the reference material to guide the student toward the idea with a
    short explanation, an example, and one guiding question. Do not give away the final answer."""

    query: str = dspy.InputField(desc="the student's question or attempt")
    context: str = dspy.InputField(desc="reference material to teach from")
    metadata: str = dspy.InputField(desc="grade level, subject and teaching style")
    response: str = dspy.OutputField(desc="the tutor's reply to the student")


class TutorProgram(dspy.Module):
    """Answers a student through one predictor, optionally reasoning first (chain of thought)."""

    def __init__(self, chain_of_thought: bool = False):
        super().__init__()
        self.chain_of_thought = chain_of_thought
        self.respond = (
            dspy.ChainOfThought(TeachingSignature) if chain_of_thought else dspy.Predict(TeachingSignature)
        )

    def forward(self, query: str, context: str = "", metadata: str = "") -> dspy.Prediction:
        return self.respond(query=query, context=context, metadata=metadata)


def format_metadata(metadata: dict[str, Any]) -> str:
    parts = [f"{key.replace('_', ' ')}: {metadata[key]}" for key in METADATA_KEYS if metadata.get(key)]
    return "; ".join(parts)


def material(system: str) -> str:
    """The teaching material of a system turn: what follows its "Context:"/"Passage:" label, else all of it."""
    match = _MATERIAL_LABEL.search(system)
    return system[match.end() :] if match else system


def example_from_record(record: dict[str, Any]) -> dspy.Example | None:
    """A dataset record (ChatML conversation) as a teaching example: the first student turn is the query,
    the tutor's reply to it the reference response, the system turn (or the record's context) the context.
    Records without a user turn followed by an assistant turn give None."""
    turns = record.get("conversations") or []
    metadata = dict(record.get("metadata") or {})
    source = dict(record.get("source") or {})
    system = next((t.get("content", "") for t in turns if t.get("role") == "system"), "")
    query = reference = ""
    for index, turn in enumerate(turns):
        if (
            turn.get("role") == "user"
            and index + 1 < len(turns)
            and turns[index + 1].get("role") == "assistant"
        ):
            query, reference = turn.get("content", ""), turns[index + 1].get("content", "")
            break
    if not query.strip() or not reference.strip():
        return None
    context = record.get("context") or source.get("context") or metadata.get("context") or material(system)
    return dspy.Example(
        query=query.strip(),
        context=str(context).strip(),
        metadata=format_metadata(metadata),
        response=reference.strip(),
        subject=str(metadata.get("subject", "")),
        final_answer=str(metadata.get("final_answer") or metadata.get("answer") or ""),
        record_id=str(record.get("id", "")),
    ).with_inputs("query", "context", "metadata")


def examples_from_records(records: list[dict[str, Any]], limit: int = 0) -> list[dspy.Example]:
    examples = [example for record in records if (example := example_from_record(record)) is not None]
    return examples[:limit] if limit > 0 else examples


class PedagogicalMetric:
    """DSPy metric `(example, prediction, trace=None, pred_name=None, pred_trace=None)`: the pedagogical score,
    or for GEPA (`with_feedback=True`) a `dspy.Prediction(score=..., feedback=...)`.

    It also keeps the best score seen, for progress reports."""

    def __init__(self, weights: MetricWeights, embed: Embed | None = None, with_feedback: bool = False):
        self.weights = weights
        self.embed = embed if weights.similarity > 0 else None
        self.with_feedback = with_feedback
        self.calls = 0
        self.best = 0.0
        self._lock = threading.Lock()

    def score(self, example: dspy.Example, response: str) -> PedagogicalScore:
        similarity = None
        if self.embed is not None:
            similarity = cosine_similarities(self.embed, [response], [example.response])[0]
        return score_response(
            response,
            context=example.context,
            reference=example.response,
            weights=self.weights,
            final_answer=example.get("final_answer", ""),
            similarity=similarity,
        )

    def __call__(
        self,
        example: dspy.Example,
        prediction: dspy.Prediction | None,
        trace: Any = None,
        pred_name: str | None = None,
        pred_trace: Any = None,
    ) -> float | dspy.Prediction:
        response = (prediction.get("response") if prediction is not None else None) or ""
        result = self.score(example, str(response))
        with self._lock:
            self.calls += 1
            self.best = max(self.best, result.score)
        if self.with_feedback:
            return dspy.Prediction(score=result.score, feedback=result.feedback(self.weights))
        return result.score


@dataclass
class ProgramInfo:
    name: str
    version: str
    optimizer: str
    dataset: str
    dataset_version: str
    # LoRA adapter the program was optimized over; empty = base model.
    adapter: str
    lm_adapter: str
    chain_of_thought: bool
    baseline_score: float
    optimized_score: float
    lm_calls: int
    lm_tokens: int
    parameters: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{PREFIX}/{self.name}/{self.version}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgramInfo:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class ProgramRepository:
    def __init__(self, store: ArtifactStore):
        self.store = store
        self._lock = threading.Lock()

    def save(self, program: TutorProgram, info: ProgramInfo) -> ProgramInfo:
        """Store `program` as the next version of `info.name`; returns the info with its version set."""
        validate_name(info.name, "program name")
        # The module's shape must be rebuilt before its state loads.
        info.chain_of_thought = program.chain_of_thought
        state = program.dump_state(json_mode=True)
        with self._lock:
            info.version = f"v{self._latest_number(info.name) + 1}"
            info.created_at = time.time()
            self.store.write_json(f"{info.key}/{_STATE_FILE}", state)
            self.store.write_json(f"{info.key}/{_INFO_FILE}", asdict(info))
        return info

    def get(self, name: str, version: str = "") -> ProgramInfo:
        validate_name(name, "program name")
        if version and not _VERSION.match(version):
            raise InvalidArgument(f"program version {version!r} is not valid: use v1, v2, ...")
        versions = self._versions(name)
        version = version or (versions[-1] if versions else "")
        if not version or version not in versions:
            raise NotFound(
                f"program {name}{'@' + version if version else ''} does not exist: "
                "`tutorforge programs list` shows the saved ones, `tutorforge optimize` makes one"
            )
        return ProgramInfo.from_json(self.store.read_json(f"{PREFIX}/{name}/{version}/{_INFO_FILE}"))

    def state(self, info: ProgramInfo) -> dict[str, Any]:
        return self.store.read_json(f"{info.key}/{_STATE_FILE}")

    def load(self, name: str, version: str = "") -> tuple[ProgramInfo, TutorProgram]:
        info = self.get(name, version)
        program = TutorProgram(chain_of_thought=info.chain_of_thought)
        program.load_state(self.state(info))
        return info, program

    def list(self) -> list[ProgramInfo]:
        """The latest version of every program, by name."""
        infos = []
        for name in self.store.list(PREFIX):
            versions = self._versions(name)
            if versions:
                infos.append(
                    ProgramInfo.from_json(
                        self.store.read_json(f"{PREFIX}/{name}/{versions[-1]}/{_INFO_FILE}")
                    )
                )
        return infos

    def _versions(self, name: str) -> list[str]:
        found = []
        for entry in self.store.list(f"{PREFIX}/{name}"):
            match = _VERSION.match(entry)
            if match and self.store.exists(f"{PREFIX}/{name}/{entry}/{_INFO_FILE}"):
                found.append((int(match.group(1)), entry))
        return [entry for _, entry in sorted(found)]

    def _latest_number(self, name: str) -> int:
        numbers = [
            int(m.group(1)) for entry in self.store.list(f"{PREFIX}/{name}") if (m := _VERSION.match(entry))
        ]
        return max(numbers, default=0)
