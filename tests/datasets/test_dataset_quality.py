"""De-duplication, decontamination, quality signals and the seeded stratified split."""

from __future__ import annotations

from dataset_helpers import dialogue

from tutorforge.core.pedagogy import quality_signals, reveals_answer
from tutorforge.datasets.dedup import Decontaminator, find_duplicates
from tutorforge.datasets.split import split_records

BASE = dialogue(
    "How do I find the area of a rectangle with sides three and five?",
    "What does area measure, and how could you count the unit squares inside the rectangle?",
    "I could count rows of squares, three rows of five.",
    "Good thinking. How many squares is that altogether, and is there a faster way than counting one by one?",
)["conversations"]


def test_exact_duplicates_ignore_case_spacing_and_punctuation():
    variant = [dict(turn, content=turn["content"].upper().replace(",", "") + "  ") for turn in BASE]
    found = find_duplicates([BASE, variant], near_threshold=1.0)
    assert found[1].kind == "exact_duplicate" and found[1].of == 0


def test_near_duplicates_use_the_threshold():
    reworded = [dict(turn) for turn in BASE]
    reworded[3] = {"role": "assistant", "content": reworded[3]["content"].replace("Good thinking.", "Nice work.")}
    other = dialogue("Why is the sky blue?", "What happens to sunlight when it passes through air?")["conversations"]
    found = find_duplicates([BASE, reworded, other], near_threshold=0.7)
    assert set(found) == {1} and found[1].kind == "near_duplicate"
    assert find_duplicates([BASE, reworded, other], near_threshold=1.0) == {}
    # A stricter threshold than their similarity keeps both.
    assert find_duplicates([BASE, reworded], near_threshold=0.99) == {}


def test_decontamination_flags_shared_ngrams_only():
    decontaminator = Decontaminator(["Students ask: what does area measure, and how could you count the unit squares?"], n=8)
    assert "shared 8-grams" in decontaminator.overlap(BASE)
    unrelated = dialogue("Why is the sky blue?", "What happens to sunlight when it passes through air?")["conversations"]
    assert decontaminator.overlap(unrelated) is None
    assert not Decontaminator([], n=8)


def test_quality_signals():
    signals = quality_signals(BASE)
    assert signals.question_rate == 1.0 and not signals.reveals_answer and signals.tutor_turns == 2
    telling = dialogue("What is 3 times 5?", "The answer is 15.", "Ok", "Do you see why?")["conversations"]
    signals = quality_signals(telling)
    assert signals.question_rate == 0.5 and signals.answer_revealing_turns == 1
    assert reveals_answer("So it equals 42 in the end.")
    assert not reveals_answer("What do you think the answer could be?")
    assert not reveals_answer("Nice. So the answer is 15?")
    assert reveals_answer("Add the tops, which is equivalent to 3/10. Next?")


def _records(counts: dict[str, int]) -> list[dict]:
    return [
        {"id": f"{subject}-{i:03d}", "metadata": {"subject": subject}}
        for subject, count in counts.items()
        for i in range(count)
    ]


def test_split_is_deterministic_seeded_and_stratified():
    records = _records({"math": 20, "science": 10, "history": 10})
    train, validation = split_records(records, 0.25, seed=7)
    again_train, again_validation = split_records(list(records), 0.25, seed=7)
    assert [r["id"] for r in validation] == [r["id"] for r in again_validation]
    assert len(validation) == 10 and len(train) == 30
    per_subject = {s: sum(r["metadata"]["subject"] == s for r in validation) for s in ("math", "science", "history")}
    assert per_subject == {"math": 5, "science": 2, "history": 3} or per_subject == {"math": 5, "science": 3, "history": 2}
    other_seed = split_records(records, 0.25, seed=8)[1]
    assert {r["id"] for r in other_seed} != {r["id"] for r in validation}
    # Input order does not matter for which records are held out.
    reversed_validation = split_records(list(reversed(records)), 0.25, seed=7)[1]
    assert {r["id"] for r in reversed_validation} == {r["id"] for r in validation}


def test_split_edge_cases():
    assert split_records([], 0.1, 0) == ([], [])
    one = _records({"math": 1})
    assert split_records(one, 0.5, 0) == (one, [])
    two = _records({"math": 2})
    train, validation = split_records(two, 0.1, 0)
    assert len(train) == 1 and len(validation) == 1
    assert split_records(two, 0.0, 0) == (two, [])
