"""Each validation rule, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from tutorforge.datasets.validation import structure_problem, validate_record


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


@pytest.mark.parametrize(
    ("conversation", "problem"),
    [
        (turns(("user", "Hi"), ("assistant", "What do you know?")), None),
        (turns(("system", "tutor"), ("user", "Hi"), ("assistant", "Why?")), None),
        ([], "no turns"),
        (turns(("system", "tutor")), "only a system turn"),
        (turns(("assistant", "Hello"), ("user", "hi"), ("assistant", "Why?")), "turn 0 is 'assistant' where 'user' was expected"),
        (turns(("user", "a"), ("user", "b"), ("assistant", "c")), "turn 1 is 'user' where 'assistant' was expected"),
        (turns(("system", "s"), ("user", "a"), ("system", "b"), ("assistant", "c")), "turn 2 is 'system' where 'assistant' was expected"),
        (turns(("user", "a"), ("assistant", "b"), ("user", "c")), "must end with an assistant turn"),
        (turns(("user", "a"), ("assistant", "   ")), "turn 1 (assistant) has empty content"),
        (turns(("student", "a"), ("assistant", "b")), "turn 0 has unknown role 'student'"),
    ],
)
def test_structure_rules(conversation, problem):
    found = structure_problem(conversation)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_token_limit_uses_the_chat_template(token_counter):
    count, name = token_counter
    assert name == "SmolLM2-135M-Instruct"
    record = {"conversations": turns(("user", "What is a fraction?"), ("assistant", "What does sharing a pizza tell you?"))}
    problem, tokens = validate_record(record, count, 2048)
    assert problem is None
    # The template adds role markers (and a default system turn) around the ~16 content tokens.
    assert 20 < tokens < 80
    problem, _ = validate_record(record, count, tokens - 1)
    assert problem == f"too long: {tokens} tokens (limit {tokens - 1})"


def test_huge_records_are_refused_without_tokenizing(token_counter):
    count, _ = token_counter
    calls = []
    record = {"conversations": turns(("user", "x " * 200_000), ("assistant", "Why?"))}
    problem, _ = validate_record(record, lambda c: calls.append(c) or count(c), 2048)
    assert problem.startswith("too long: 400004 characters")
    assert calls == []


def test_required_field():
    problem, _ = validate_record({"messages": []}, lambda c: 0, 2048)
    assert problem == "missing required field 'conversations'"
