"""An LLM-judge rubric metric along MRBench's tutor dimensions (Maurya et al., 2025: mistake
identification, providing guidance, actionability, not revealing the answer, tutor tone), scored 1–5 each
by any LM and parsed robustly from whatever the LM writes. The heuristic pedagogical metric stays the
default; a run opts into this one.

Also how the optimization service reaches an LM besides the program's own (the judge, the reflection LM):
the platform's inference service ("base" or a LoRA adapter), or a `dspy.LM` for an OpenAI-compatible URL
from settings — probed before a run starts, so an unreachable one fails the request, not the run."""

from __future__ import annotations

import re
import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.lm15 import Message, Request, TextPart

from tutorforge.core.errors import FailedPrecondition
from tutorforge.core.names import adapter_for
from tutorforge.core.settings import LmEndpoint
from tutorforge.optimization.lm import InferenceLM, TutorClient, describe_error

# (name, what a 5 means, what a 1 means, how LMs tend to name it)
DIMENSIONS: tuple[tuple[str, str, str, str], ...] = (
    (
        "mistake_identification",
        "recognises exactly what the student got wrong or is missing",
        "ignores or misreads the student's mistake or confusion",
        r"mistake\w*(?:[\s_-]*identif\w*)?|identif\w*",
    ),
    (
        "guidance",
        "guides toward the idea with relevant hints or explanation",
        "gives no useful direction, or wrong direction",
        r"(?:providing[\s_-]*)?guid\w*",
    ),
    (
        "actionability",
        "makes the student's next step clear",
        "leaves the student with nothing to do next",
        r"action\w*",
    ),
    (
        "not_revealing",
        "lets the student find the answer (does not state it)",
        "states the final answer outright",
        r"(?:not[\s_-]*|no[\s_-]*)?reveal\w*(?:[\s_-]*(?:of[\s_-]*)?(?:the[\s_-]*)?answer)?",
    ),
    (
        "tone",
        "is encouraging, patient and respectful",
        "is dismissive, discouraging or rude",
        r"(?:tutor[\s_-]*)?tone",
    ),
)
NAMES = tuple(name for name, *_ in DIMENSIONS)
_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
# A dimension's name, then within a few non-digit characters (": ", " = ", "** - ", '": ') its 1–5 score.
_NAMED = [
    (name, re.compile(rf"(?:{alias})[^\d\n]{{0,24}}?([1-5](?:\.\d+)?)(?![\d.]*\d)", re.IGNORECASE))
    for name, _, _, alias in DIMENSIONS
]
_BARE = re.compile(r"(?<![\d.])([1-5])(?:\.0)?(?![\d.])")
_MATERIAL_CHARS = 1500

SYSTEM_PROMPT = (
    "You grade a tutor's reply to a student. Score each dimension from 1 (worst) to 5 (best):\n"
    # No digits next to the names: a small judge that echoes the rubric must not look like it scored.
    + "\n".join(f"- {name} — best when it {good}; worst when it {bad}" for name, good, bad, _ in DIMENSIONS)
    + "\nAnswer with exactly five lines, one per dimension, like `guidance: 4`, and nothing else."
)


def _grading_prompt(query: str, context: str, response: str, final_answer: str = "") -> str:
    answer = f"\nThe final answer the student should reach themselves: {final_answer}" if final_answer else ""
    return (
        f"Reference material:\n{context[:_MATERIAL_CHARS]}{answer}\n\nStudent: {query}\n\n"
        f"Tutor's reply: {response}\n\nScores ({', '.join(NAMES)}):"
    )


_DEMONSTRATIONS = (
    (
        (
            "Is 3 x 4 = 7?",
            "Multiplication is repeated addition.",
            "Not quite. What do you get if you add 3 four times?",
            "12",
        ),
        "mistake_identification: 5\nguidance: 4\nactionability: 5\nnot_revealing: 5\ntone: 4",
    ),
    (
        (
            "Why do plants need light?",
            "Photosynthesis turns light into sugar.",
            "They need it for photosynthesis. Next.",
            "",
        ),
        "mistake_identification: 2\nguidance: 2\nactionability: 1\nnot_revealing: 1\ntone: 2",
    ),
)


@dataclass
class JudgeScore:
    # Dimension → score 1–5, for the dimensions the judge's reply gave.
    scores: dict[str, float]
    reply: str
    # Mean over the given dimensions, mapped from 1–5 to 0–1; 0 when the reply gave none.
    score: float = field(init=False)

    def __post_init__(self) -> None:
        self.score = statistics.fmean((v - 1) / 4 for v in self.scores.values()) if self.scores else 0.0

    def feedback(self) -> str:
        if not self.scores:
            return "The judge's reply gave no scores."
        weakest = sorted(self.scores, key=self.scores.get)[:2]
        given = ", ".join(f"{name} {value:g}/5" for name, value in self.scores.items())
        return f"Judge: {given}. Improve {' and '.join(weakest)} first."


def parse_scores(reply: str) -> dict[str, float]:
    """The 1–5 scores in a judge's reply, whatever its format: `name: 4`, `**Name** - 4/5`, JSON, words;
    or, when it names at most one dimension, its first five bare 1–5 numbers in rubric order."""
    text = _WORD.sub(lambda m: _WORDS[m.group(1).lower()], reply)
    scores = {name: float(match.group(1)) for name, pattern in _NAMED if (match := pattern.search(text))}
    if len(scores) <= 1:
        bare = _BARE.findall(text)
        if len(bare) >= len(NAMES):
            return {name: float(value) for name, value in zip(NAMES, bare, strict=False)}
    return scores


class JudgeMetric:
    """DSPy metric `(example, prediction, trace=None, pred_name=None, pred_trace=None)`: the judge's rubric
    score in [0, 1], or for GEPA (`with_feedback=True`) a `dspy.Prediction(score=..., feedback=...)`."""

    def __init__(self, lm: dspy.BaseLM, with_feedback: bool = False):
        self.lm = lm
        self.with_feedback = with_feedback
        self.calls = 0
        # Judge replies that gave no score at all (they score 0).
        self.unparsed = 0
        self._lock = threading.Lock()

    def judge(self, query: str, context: str, response: str, final_answer: str = "") -> JudgeScore:
        # Two graded examples first: even a 135M model then answers in the five-line format.
        messages = []
        for demo, scores in _DEMONSTRATIONS:
            messages += [Message.user(_grading_prompt(*demo)), Message.assistant(TextPart(scores))]
        messages.append(Message.user(_grading_prompt(query, context, response, final_answer)))
        request = Request(model=self.lm.model, system=SYSTEM_PROMPT, messages=tuple(messages))
        reply = self.lm(request).text or ""
        result = JudgeScore(parse_scores(reply), reply)
        with self._lock:
            self.calls += 1
            self.unparsed += not result.scores
        return result

    def score(self, example: dspy.Example, response: str) -> JudgeScore:
        context, answer = example.get("context", ""), example.get("final_answer", "")
        return self.judge(example.query, context, response, answer)

    def __call__(
        self,
        example: dspy.Example,
        prediction: dspy.Prediction | None,
        trace: Any = None,
        pred_name: str | None = None,
        pred_trace: Any = None,
    ) -> float | dspy.Prediction:
        response = str((prediction.get("response") if prediction is not None else None) or "")
        result = self.score(example, response)
        if self.with_feedback:
            return dspy.Prediction(score=result.score, feedback=result.feedback())
        return result.score


def endpoint_lm(endpoint: LmEndpoint, max_tokens: int) -> dspy.LM:
    """A `dspy.LM` for an OpenAI-compatible server; no retries (a probe must fail fast), no response cache."""
    return dspy.LM(
        f"openai/{endpoint.model or 'default'}",
        api_base=endpoint.url,
        api_key=endpoint.api_key.get_secret_value() if endpoint.api_key else "unused",
        max_tokens=max_tokens,
        temperature=0.0,
        cache=False,
        num_retries=0,
        timeout=endpoint.timeout_seconds,
    )


def configured_lm(adapter: str, endpoint: LmEndpoint, tutor: TutorClient, max_tokens: int) -> dspy.BaseLM:
    """The endpoint's LM when its url is set, else `adapter` ("base"/"" = the base model) on the inference
    service through `tutor` (whose usage and stop checks it shares)."""
    if endpoint.url:
        return endpoint_lm(endpoint, max_tokens)
    return InferenceLM(tutor, adapter_for(adapter), max_tokens=max_tokens)


def probe(lm: dspy.BaseLM, what: str, fix: str) -> None:
    """One one-token call; FailedPrecondition naming `what` and how to fix it when the LM cannot answer."""
    try:
        lm("Reply OK.", max_tokens=1)
    except Exception as error:  # noqa: BLE001 - any failure means the LM cannot serve the run
        raise FailedPrecondition(f"{what} is unreachable ({describe_error(error)}): {fix}") from error
