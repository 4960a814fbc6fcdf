"""The checks generated dialogues pass turn by turn (datasets.generation): the turn schemas, Socratic tutor
turns, faithfulness to the passage and decoding loops, on real replies of SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tutorforge.core.pedagogy import quality_signals
from tutorforge.datasets.generation import (
    DEFAULT_MIN_FAITHFULNESS,
    TURN_SCHEMAS,
    degenerate_turn,
    faithfulness,
    repetition,
    tutor_turn_problem,
)

# A real exchange of SmolLM2-135M-Instruct (greedy) for a fractions passage, from before the turn schemas:
# the student asked only "Why?" and the tutor explained (wrongly, 1/5 + 2/5 = 3/10) instead of asking.
PASSAGE = (
    "To add two fractions with the same denominator, add the numerators and keep the denominator. For example, "
    "1/5 + 2/5 = 3/5. When the denominators differ, first rewrite both fractions with a common denominator, such "
    "as the least common multiple of the two denominators."
)
LECTURING_TUTOR = (
    "The reason is that when you add fractions with different denominators, you need to find a common denominator "
    "that both the numerator and denominator of the second fraction will have. In this case, you're adding 1/5 and "
    "2/5, which is equivalent to 3/10.\n\nThis is a classic example of how fractions can be used to represent "
    "division, but with different"
)
# The same model's greedy reply to a whole-dialogue prompt about photosynthesis looped on one sentence.
LOOPING_REPLY = "The sun is a light source that is used to make light. " * 20


def test_tutor_turns_that_reveal_or_do_not_ask_are_rejected():
    assert tutor_turn_problem("What do you notice about the two denominators?") is None
    why, kind = tutor_turn_problem("The answer is 3/4. Does that make sense?")
    assert kind == "reveals_answer" and "reveals the answer" in why
    why, kind = tutor_turn_problem("Think about the denominators first.")
    assert kind == "no_question" and "does not end with a question" in why


def test_turn_schemas_hold_one_line_and_end_questions_with_a_question_mark():
    jsonschema.validate({"question": "Why do fractions need a common denominator?"}, TURN_SCHEMAS["question"])
    jsonschema.validate({"answer": "Because the pieces must be the same size."}, TURN_SCHEMAS["answer"])
    for bad in ({"reply": "Add the numerators."}, {"reply": "Why? And how?"}, {"reply": "What\nnow?"}, {},
                {"reply": "What now?", "extra": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, TURN_SCHEMAS["reply"])


def test_real_lecturing_tutor_turn_is_unfaithful_and_reveals_the_answer():
    """The tutor drifts from the passage's words and states a result: the faithfulness score falls under
    the default bar, the turn is refused, and the answer-revealing signal fires."""
    score = faithfulness([LECTURING_TUTOR], PASSAGE)
    assert 0.1 < score < DEFAULT_MIN_FAITHFULNESS
    assert faithfulness(["What do you think the shadow of the moon tells us about pizza?"], PASSAGE) == 0.0
    assert faithfulness(["What do the numerators do when you keep the denominator?"], PASSAGE) == 1.0
    assert tutor_turn_problem(LECTURING_TUTOR)[1] == "reveals_answer"
    signals = quality_signals([{"role": "user", "content": "Why?"}, {"role": "assistant", "content": LECTURING_TUTOR}])
    assert signals.reveals_answer and signals.question_rate == 0.0


def test_decoding_loops_are_recognised():
    """A looping reply is dropped as degenerate; hand-written dialogues never come close."""
    assert repetition(LOOPING_REPLY) > 0.9
    problem = degenerate_turn([{"role": "user", "content": "Why?"}, {"role": "assistant", "content": LOOPING_REPLY}])
    assert problem.startswith("turn 1 (assistant) repeats itself")
    starter = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "dialogues.jsonl").read_text().splitlines()]
    assert all(degenerate_turn(record["conversations"]) is None for record in starter)
