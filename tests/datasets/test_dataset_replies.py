"""Parsing of generated replies: repairs of what is safely repairable, reasons for the rest, and the
real replies SmolLM2-135M-Instruct gave to the generator prompts (fixtures/real_replies/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorforge.datasets.generation import (
    DEFAULT_MIN_FAITHFULNESS,
    TURN_SCHEMAS,
    degenerate_turn,
    faithfulness,
    repetition,
    tutor_turn_problem,
)
from tutorforge.datasets.quality import quality_signals
from tutorforge.datasets.replies import parse_conversations
from tutorforge.datasets.validation import structure_problem

REAL_REPLIES = sorted((Path(__file__).parent / "fixtures" / "real_replies").glob("synthetic_*.json"))
GOOD = [[{"role": "user", "content": "Why is ice slippery?"}, {"role": "assistant", "content": "What happens at its surface?"}]]


def test_clean_json():
    parsed = parse_conversations(json.dumps(GOOD))
    assert parsed.conversations == GOOD and not parsed.repairs and not parsed.rejected


def test_json_inside_prose_and_code_fence():
    text = f"Sure! Here are the conversations:\n```json\n{json.dumps(GOOD, indent=2)}\n```\nHope this helps."
    assert parse_conversations(text).conversations == GOOD


def test_trailing_commas_single_quotes_and_role_aliases():
    text = "[[{'role': 'student', 'content': 'Why is ice slippery?'}, {'role': 'tutor', 'content': 'What happens at its surface?'},],]"
    parsed = parse_conversations(text)
    assert parsed.conversations == GOOD
    assert "read single-quoted JSON" in parsed.repairs
    assert "role 'student' read as 'user'" in parsed.repairs and "role 'tutor' read as 'assistant'" in parsed.repairs


def test_missing_closing_brackets_keep_complete_turns_only():
    text = json.dumps(GOOD)[:-2] + ', {"role": "user", "content": "And wh'
    parsed = parse_conversations(text)
    assert parsed.conversations == GOOD
    assert "closed unterminated brackets" in parsed.repairs or "cut trailing text" in parsed.repairs


def test_single_conversation_and_wrapped_forms():
    assert parse_conversations(json.dumps(GOOD[0])).conversations == GOOD
    assert parse_conversations(json.dumps({"conversations": GOOD[0]})).conversations == GOOD
    assert parse_conversations(json.dumps([{"messages": GOOD[0]}])).conversations == GOOD


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty reply"),
        ("I am sorry, I cannot write that.", "no parseable JSON in the reply"),
        ('[[{"role": "narrator", "content": "Once"}]]', "conversation 0: unknown role 'narrator'"),
        ('[[{"role": "user", "content": ""}]]', "conversation 0: empty content in a user turn"),
        ('[["just", "strings"]]', "conversation 0: a turn is not an object"),
        ('[{"title": "no turns"}]', "conversation 0: not a list of turns"),
    ],
)
def test_rejections_say_why(text, reason):
    parsed = parse_conversations(text)
    assert parsed.conversations == [] and parsed.rejected == [reason]


def test_one_bad_conversation_does_not_sink_the_others():
    text = json.dumps([GOOD[0], [{"role": "wizard", "content": "x"}]])
    parsed = parse_conversations(text)
    assert parsed.conversations == GOOD and parsed.rejected == ["conversation 1: unknown role 'wizard'"]


def test_tutor_turns_that_reveal_or_do_not_ask_are_rejected():
    assert tutor_turn_problem("What do you notice about the two denominators?") is None
    why, kind = tutor_turn_problem("The answer is 3/4. Does that make sense?")
    assert kind == "reveals_answer" and "reveals the answer" in why
    why, kind = tutor_turn_problem("Think about the denominators first.")
    assert kind == "no_question" and "does not end with a question" in why


def test_turn_schemas_hold_one_line_and_end_questions_with_a_question_mark():
    import jsonschema

    jsonschema.validate({"question": "Why do fractions need a common denominator?"}, TURN_SCHEMAS["question"])
    jsonschema.validate({"answer": "Because the pieces must be the same size."}, TURN_SCHEMAS["answer"])
    for bad in ({"reply": "Add the numerators."}, {"reply": "Why? And how?"}, {"reply": "What\nnow?"}, {}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, TURN_SCHEMAS["reply"])


@pytest.mark.parametrize("path", REAL_REPLIES, ids=lambda p: p.stem)
def test_real_small_model_replies(path):
    """Whatever the small model wrote, parsing never crashes and every outcome is accounted for: each
    conversation kept has canonical roles and text, anything else is rejected with a reason."""
    fixture = json.loads(path.read_text())
    parsed = parse_conversations(fixture["reply"])
    assert parsed.conversations or parsed.rejected
    for conversation in parsed.conversations:
        assert all(turn["role"] in ("system", "user", "assistant") and turn["content"].strip() for turn in conversation)
    expected = fixture.get("expected")
    if expected is not None:
        assert len(parsed.conversations) == expected["conversations"]
        assert parsed.rejected == expected["rejected"]
        assert [structure_problem(c) for c in parsed.conversations] == expected["structure_problems"]


def test_turns_run_together_in_one_object_are_refused_not_collapsed():
    text = '[{"role": "user", "content": "Why?", "role": "assistant", "content": "What do you think?"}]'
    parsed = parse_conversations(text)
    assert parsed.conversations == []
    assert parsed.rejected == ["an object repeats the key(s) ['content', 'role'] (turns run together in one object)"]
    single_quoted = "[{'role': 'user', 'content': 'Why?', 'role': 'assistant'}]"
    assert parse_conversations(single_quoted).conversations == []


def test_real_grounded_reply_is_scored_and_flagged():
    """The model's real question and tutor turn for a fractions passage: the tutor explains (wrongly,
    1/5 + 2/5 = 3/10) instead of asking, drifts from the passage's words and states a result — the
    faithfulness score falls under the default bar and the answer-revealing signal fires."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "real_replies" / "grounded_fractions.json").read_text())
    score = faithfulness([fixture["tutor"]], fixture["passage"])
    assert 0.1 < score < DEFAULT_MIN_FAITHFULNESS
    assert faithfulness(["What do you think the shadow of the moon tells us about pizza?"], fixture["passage"]) == 0.0
    assert faithfulness(["What do the numerators do when you keep the denominator?"], fixture["passage"]) == 1.0
    signals = quality_signals([{"role": "user", "content": fixture["question"]}, {"role": "assistant", "content": fixture["tutor"]}])
    assert signals.reveals_answer and signals.question_rate == 0.0


def test_decoding_loops_are_recognised_on_real_replies():
    """Greedy replies of the small model loop on one phrase; hand-written dialogues never come close."""
    looping = json.loads((Path(__file__).parent / "fixtures" / "real_replies" / "synthetic_photosynthesis.json").read_text())
    assert repetition(looping["reply"]) > 0.9
    problem = degenerate_turn([{"role": "user", "content": "Why?"}, {"role": "assistant", "content": looping["reply"]}])
    assert problem.startswith("turn 1 (assistant) repeats itself")
    starter = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "dialogues.jsonl").read_text().splitlines()]
    assert all(degenerate_turn(record["conversations"]) is None for record in starter)


def test_synthetic_prompt_carries_the_parameters():
    from tutorforge.datasets.prompts import GENERAL_TOPIC, synthetic_prompt

    prompt = synthetic_prompt("photosynthesis", 3, 2)
    assert prompt.startswith("Write 3 short conversation(s) between a student and a tutor about photosynthesis.")
    assert "Each conversation has 2 exchange(s)" in prompt and "never states the final answer" in prompt
    assert GENERAL_TOPIC in synthetic_prompt("General", 1, 1)
    # Later requests differ, so greedy decoding does not repeat the first reply.
    assert synthetic_prompt("x", 1, 1, variation=1) != synthetic_prompt("x", 1, 1)
