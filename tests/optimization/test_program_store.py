"""The teaching program document and its store (versions, served pointer), DSPy module ⇄ document, record →
turn mapping, the plain adapter, bootstrap intervals and report files — the pieces that need no model."""

from __future__ import annotations

import json

import dspy
import pytest

from tutorforge.artifacts.programs import Demonstration, ProgramInfo, ProgramRepository, TeachingProgram
from tutorforge.artifacts.reports import report_files
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.teaching import DEFAULT_SYSTEM_PROMPT, build_prompt
from tutorforge.optimization.formats import PlainAdapter
from tutorforge.optimization.evaluation import Estimate, Outcome, Target, TargetMetrics, score_outcomes
from tutorforge.optimization.lm import Passage
from tutorforge.optimization.metrics import MetricWeights
from tutorforge.optimization.program import TutorProgram
from tutorforge.optimization.report import EvaluationReport, load_report, render_markdown, save_report
from tutorforge.optimization.turns import BENCHMARK_SET, TutorTurn, benchmark_turns, turn_from_record, turns_from_records

RECORD = {
    "id": "r1",
    "conversations": [
        {"role": "system", "content": "You are a Socratic tutor.\n\nContext: A fraction names equal parts of a whole."},
        {"role": "user", "content": "Is 2/6 the same as 1/3?"},
        {"role": "assistant", "content": "What happens if you split each third into two equal parts?"},
        {"role": "user", "content": "I get sixths."},
        {"role": "assistant", "content": "So how many sixths make one third?"},
    ],
    "metadata": {"subject": "mathematics", "final_answer": "2/6 = 1/3"},
}


def _info(name: str = "tutor") -> ProgramInfo:
    return ProgramInfo(
        name=name, version="", optimizer="labeled-fewshot", dataset="d", dataset_version="abc", adapter=""
    )


def test_record_maps_to_its_last_tutor_turn_with_the_conversation_before_it() -> None:
    turn = turn_from_record(RECORD)
    assert turn.query == "I get sixths."
    assert [m["role"] for m in turn.messages] == ["user", "assistant", "user"]
    assert turn.reference == "So how many sixths make one third?"
    assert turn.context == "A fraction names equal parts of a whole."
    assert turn.subject == "mathematics" and turn.final_answer == "2/6 = 1/3"
    example = turn.example()
    assert set(example.inputs().keys()) == {"query", "history"} and len(example.history) == 2
    assert turn_from_record({"conversations": [{"role": "user", "content": "hi"}]}) is None


def test_turn_positions_and_limited_samples_cover_the_dataset_not_its_first_topic() -> None:
    first = turn_from_record(RECORD, 0)
    assert first.query == "Is 2/6 the same as 1/3?" and first.reference.startswith("What happens")
    # Stored card by card: 30 records of one subject, then 30 of another.
    records = [
        {**RECORD, "id": f"{subject}-{n}", "metadata": {"subject": subject}}
        for subject in ("mathematics", "biology")
        for n in range(30)
    ]
    sample = turns_from_records(records, limit=10, seed=3)
    assert len(sample) == 10 and {t.subject for t in sample} == {"mathematics", "biology"}
    assert sum(t.subject == "biology" for t in sample) == 5
    everything = turns_from_records(records, seed=3)
    assert len(everything) == 60 and {t.query for t in everything} == {"Is 2/6 the same as 1/3?", "I get sixths."}
    assert [t.id for t in turns_from_records(records, limit=10, seed=3)] == [t.id for t in sample]
    assert [t.id for t in turns_from_records(records, limit=10, seed=4)] != [t.id for t in sample]


def test_programs_are_versioned_json_documents_and_load_back_identically(tmp_path) -> None:
    repository = ProgramRepository(ArtifactStore(str(tmp_path / "store")))
    program = TeachingProgram(
        instructions="Ask one question at a time.",
        demonstrations=(Demonstration("Is 2/6 the same as 1/3?", "What if you cut each third in two?"),),
        adapter="math-tutor",
        base_model="smol",
    )
    first = repository.save(program, _info())
    second = repository.save(program, _info())
    assert (first.version, second.version) == ("v1", "v2")
    document = json.loads((tmp_path / "store" / "programs" / "tutor" / "v1" / "program.json").read_text())
    assert document["format"] == "tutorforge.program/v1" and document["demonstrations"][0]["query"].startswith("Is 2/6")
    info, loaded = repository.load("tutor@v1")
    assert loaded == TeachingProgram(**{**program.__dict__, "name": "tutor@v1"})
    # Served: the latest version, until a version is promoted.
    assert repository.load("tutor")[0].version == "v2"
    repository.set_served("tutor", "v1")
    assert repository.load("tutor")[0].version == "v1" and [i.version for i in repository.list()] == ["v1"]
    with pytest.raises(NotFound):
        repository.load("tutor@v9")
    with pytest.raises(InvalidArgument):
        repository.load("tutor@latest")
    with pytest.raises(InvalidArgument):
        repository.load("../etc")


def test_program_documents_are_validated() -> None:
    with pytest.raises(InvalidArgument, match="instructions"):
        TeachingProgram(instructions=" ")
    with pytest.raises(InvalidArgument, match="demonstrations\\[0\\]"):
        TeachingProgram(instructions="x", demonstrations=(Demonstration("", "y"),))
    with pytest.raises(InvalidArgument, match="format"):
        TeachingProgram.from_json({"format": "dspy-state", "instructions": "x"})


def test_module_and_document_round_trip_and_chat_renders_the_demonstrations() -> None:
    module = TutorProgram("Be brief.")
    module.respond.demos = [
        dspy.Example(query="What is a fraction?", history=[], response="What does 'part of a whole' mean to you?"),
        dspy.Example(augmented=True, query="Why?", history=[{"role": "user", "content": "x"}], response="Why not?"),
    ]
    program = module.to_teaching(adapter="a1", base_model="m")
    assert program.instructions == "Be brief." and len(program.demonstrations) == 2
    again = TutorProgram.from_teaching(program).to_teaching(adapter="a1", base_model="m")
    assert again == program
    prompt = build_prompt([{"role": "user", "content": "Is 1/2 bigger than 1/3?"}], [], program=program)
    assert prompt[0] == {"role": "system", "content": "Be brief."}
    assert prompt[1:5] == [t for d in program.demonstrations for t in d.turns()]
    assert prompt[-1]["content"] == "Is 1/2 bigger than 1/3?"
    # The unoptimized program is the default chat, exactly.
    assert TutorProgram().to_teaching().instructions == DEFAULT_SYSTEM_PROMPT


def test_plain_adapter_sends_plain_chat_and_takes_the_whole_reply() -> None:
    """How the optimizers' own prompts (e.g. instruction proposals) reach a small model."""
    signature = dspy.Signature("question, topic -> answer", "Answer briefly.")
    messages = PlainAdapter().format(signature, [], {"question": "Why is the sky blue?", "topic": "light"})
    assert messages[0] == {"role": "system", "content": "Answer briefly."}
    assert messages[-1] == {"role": "user", "content": "Topic: light\n\nWhy is the sky blue?"}
    assert PlainAdapter().parse(signature, "  Scattering of light.  ") == {"answer": "Scattering of light."}


def test_targets_parse() -> None:
    assert Target.parse("base") == Target("base", "base")
    assert Target.parse("adapter:math-v1").adapter == "math-v1"
    assert Target.parse("program:tutor").adapter is None
    assert Target.parse("program:tutor@v2").program == "tutor@v2"
    assert Target.parse("program:tutor+base").adapter == ""
    assert Target.parse("program:tutor@v1+math").adapter == "math"
    for bad in ("", "adapter:", "program:x+", "model:x", "adapter:../x", "program:x@latest"):
        with pytest.raises(InvalidArgument):
            Target.parse(bad)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_turns() -> None:
    small = Estimate.of([1.0, 0.0] * 5)
    large = Estimate.of([1.0, 0.0] * 100)
    assert small.low < 0.5 < small.high and large.low < 0.5 < large.high
    assert large.high - large.low < small.high - small.low
    assert Estimate.of([0.3]) == Estimate(0.3, 0.3, 0.3) and Estimate.of([]) == Estimate()
    assert not Estimate(0.2, 0.1, 0.3).overlaps(Estimate(0.5, 0.4, 0.6))


def test_benchmark_set_loads_and_unknown_sets_are_refused() -> None:
    turns = benchmark_turns()
    assert len(turns) >= 80 and len({t.subject for t in turns}) >= 8
    assert {t.kind for t in turns} == {"plain", "misconception", "pressure", "followup"}
    with pytest.raises(InvalidArgument, match="evaluation_set"):
        benchmark_turns("nope")
    assert BENCHMARK_SET == "tutor-benchmark"
    # A sample of it (the demo's report) covers every subject, not the file's first one or two.
    sample = benchmark_turns(limit=24)
    assert len(sample) == 24 and {t.subject for t in sample} == {t.subject for t in turns}
    assert {t.id for t in sample} <= {t.id for t in turns}


def test_report_is_saved_as_json_markdown_and_png_with_intervals(tmp_path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    weights = MetricWeights()
    passage = Passage("[1]", "fractions", "Halves and thirds are fractions of a whole.")
    outcomes = []
    for index, (subject, reply) in enumerate(
        [
            ("math", "What do you notice about halves [1]? For example, try folding a strip."),
            ("physics", "The answer is 4."),
        ]
    ):
        turn = TutorTurn(str(index), subject, ({"role": "user", "content": "q?"},), "What do you see here?", kind="plain")
        outcomes.append(Outcome(turn, reply, (passage,), 1.5))
    score_outcomes(outcomes, weights, embed=None)
    metrics = TargetMetrics.of("base", outcomes)
    assert metrics.question_rate.mean == 0.5 and metrics.answer_reveal_rate.mean == 0.5
    assert metrics.citation_rate.mean == 0.5 and metrics.groundedness.mean > 0
    assert metrics.question_rate.low <= 0.5 <= metrics.question_rate.high
    assert set(metrics.score_per_subject) == {"math", "physics"}
    report = save_report(
        store,
        EvaluationReport("eval-1", "d", "abc", weights.to_json(), [metrics], {"base": [o.to_json() for o in outcomes]}),
    )
    loaded = load_report(store, "eval-1")
    assert loaded.targets[0].question_rate == metrics.question_rate
    files = report_files(store, loaded.evaluation_id, loaded.files)
    assert set(files) == {"report.json", "report.md", "charts/scores_per_target.png", "charts/score_per_subject.png"}
    assert all(files[name].startswith(b"\x89PNG") for name in files if name.endswith(".png"))
    markdown = render_markdown(report)
    assert "| base |" in markdown and "50% [" in markdown and "charts/scores_per_target.png" in markdown
    with pytest.raises(NotFound):
        load_report(store, "eval-404")
