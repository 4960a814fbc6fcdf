"""The teaching program as DSPy sees it (a signature and a one-predictor module), its conversion to and
from the stored `TeachingProgram` (artifacts/programs.py) that chat serves, and the DSPy metric.

The module's predictor answers through `TutorChatFormat`: every call is a real tutor turn through the
Chat RPC with the program given inline, so the optimizer scores exactly what chat will serve."""

from __future__ import annotations

import threading
from typing import Any

import dspy

from tutorforge.artifacts.programs import Demonstration, LmSettings, TeachingProgram
from tutorforge.core.teaching import DEFAULT_SYSTEM_PROMPT, NO_MATERIAL_NOTICE
from tutorforge.optimization.metrics import (
    Embed,
    MetricWeights,
    PedagogicalScore,
    cosine_similarities,
    score_response,
)


class TeachingSignature(dspy.Signature):
    """(instructions are replaced by the tutor's system prompt below)"""

    history: list[dict[str, str]] = dspy.InputField(desc="the conversation so far (student and tutor turns)")
    query: str = dspy.InputField(desc="the student's latest turn")
    response: str = dspy.OutputField(desc="the tutor's reply to the student")


# The unoptimized program is the default tutor chat, exactly.
TeachingSignature = TeachingSignature.with_instructions(DEFAULT_SYSTEM_PROMPT)


def is_teaching(signature: type[dspy.Signature]) -> bool:
    """Optimizers rebuild the signature (new instructions, renamed prefixes): recognise it by its fields."""
    return set(signature.input_fields) == {"history", "query"} and set(signature.output_fields) == {"response"}


class TutorProgram(dspy.Module):
    def __init__(self, instructions: str = DEFAULT_SYSTEM_PROMPT):
        super().__init__()
        self.respond = dspy.Predict(TeachingSignature.with_instructions(instructions))

    def forward(self, query: str, history: list[dict[str, str]] | None = None) -> dspy.Prediction:
        return self.respond(query=query, history=list(history or []))

    @classmethod
    def from_teaching(cls, program: TeachingProgram) -> TutorProgram:
        module = cls(program.instructions)
        module.respond.demos = [
            dspy.Example(query=demo.query, history=[], response=demo.response) for demo in program.demonstrations
        ]
        return module

    def to_teaching(
        self, *, adapter: str = "", base_model: str = "", max_tokens: int = 0, frequency_penalty: float = 0.0
    ) -> TeachingProgram:
        predictor = self.respond
        return TeachingProgram(
            instructions=predictor.signature.instructions.strip(),
            demonstrations=tuple(demonstrations(predictor.demos)),
            lm=LmSettings(max_tokens=max_tokens, frequency_penalty=frequency_penalty),
            adapter=adapter,
            base_model=base_model,
        )


def demonstrations(demos: list[Any]) -> list[Demonstration]:
    """A predictor's demos (labelled or bootstrapped) as served demonstrations: the student's turn and
    the tutor's reply; the conversation before a demo is not replayed (it would crowd a small model's
    context)."""
    found = []
    for demo in demos:
        query, response = str(demo.get("query") or "").strip(), str(demo.get("response") or "").strip()
        # A bootstrapped reply may start with the service's no-material notice: not the model's words.
        response = response.removeprefix(NO_MATERIAL_NOTICE).strip()
        if query and response:
            found.append(Demonstration(query, response))
    return found


class PedagogicalMetric:
    """DSPy metric `(example, prediction, trace=None, pred_name=None, pred_trace=None)`: the pedagogical score,
    or for reflective optimizers (`with_feedback=True`) a `dspy.Prediction(score=..., feedback=...)`.

    The prediction carries the passages chat retrieved for the turn (TutorChatFormat); the reply is
    scored against them, as evaluations score it. It also keeps the best score seen, for progress.

    `demo_bar`: the score a bootstrapped reply must reach to become a demonstration (a run passes the
    unoptimized program's validation mean), so demonstrations are better than what the program already says."""

    def __init__(
        self,
        weights: MetricWeights,
        embed: Embed | None = None,
        with_feedback: bool = False,
        demo_bar: float = 0.0,
    ):
        self.weights = weights
        self.embed = embed if weights.similarity > 0 else None
        self.with_feedback = with_feedback
        self.demo_bar = demo_bar
        self.calls = 0
        self.best = 0.0
        self._lock = threading.Lock()

    def score(self, example: dspy.Example, response: str, passages: list[tuple[str, str]]) -> PedagogicalScore:
        similarity = None
        if self.embed is not None:
            similarity = cosine_similarities(self.embed, [response], [example.response])[0]
        return score_response(
            response,
            context=example.get("context", ""),
            reference=example.response,
            weights=self.weights,
            final_answer=example.get("final_answer", ""),
            answer_pattern=example.get("answer_pattern", ""),
            similarity=similarity,
            passages=passages,
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
        passages = (prediction.get("passages") if prediction is not None else None) or []
        result = self.score(example, str(response), [(p.tag, p.text) for p in passages])
        with self._lock:
            self.calls += 1
            self.best = max(self.best, result.score)
        if self.with_feedback:
            return dspy.Prediction(score=result.score, feedback=result.feedback(self.weights))
        if trace is not None:
            # Bootstrapping asks whether a reply is worth copying as a demonstration (DSPy keeps it when the
            # metric is truthy): only one that asks, keeps the answer back, cites what it was given and scores
            # at least the bar — a strong adapter's typical replies would otherwise teach it shorter, plainer ones.
            socratic = result.asks_question and not result.reveals_answer and (result.cites_passage or not passages)
            return socratic and result.score >= self.demo_bar
        return result.score
