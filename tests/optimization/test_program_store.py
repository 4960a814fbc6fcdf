"""Program store (JSON state, versions), record → example mapping, the plain adapter and report files —
the pieces that need no model."""

from __future__ import annotations

import json

import dspy
import pytest
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.storage import ArtifactStore
from tutorforge.optimization.adapters import PlainAdapter, make_adapter
from tutorforge.optimization.evaluation import Outcome, Summary, Target, TargetMetrics
from tutorforge.optimization.metrics import MetricWeights, score_response
from tutorforge.optimization.program import (
    ProgramInfo,
    ProgramRepository,
    TeachingSignature,
    TutorProgram,
    example_from_record,
)
from tutorforge.optimization.report import (
    EvaluationReport,
    load_report,
    render_markdown,
    report_files,
    save_report,
)

RECORD = {
    "id": "r1",
    "conversations": [
        {
            "role": "system",
            "content": "You are a Socratic tutor.\n\nContext: A fraction names equal parts of a whole.",
        },
        {"role": "user", "content": "Is 2/6 the same as 1/3?"},
        {"role": "assistant", "content": "What happens if you split each third into two equal parts?"},
        {"role": "user", "content": "I get sixths."},
        {"role": "assistant", "content": "So how many sixths make one third?"},
    ],
    "metadata": {"subject": "mathematics", "grade_level": "5", "teaching_style": "socratic"},
}


def _info(name: str = "tutor") -> ProgramInfo:
    return ProgramInfo(
        name=name,
        version="",
        optimizer="labeled-fewshot",
        dataset="d",
        dataset_version="abc",
        adapter="",
        lm_adapter="plain",
        chain_of_thought=False,
        baseline_score=0.2,
        optimized_score=0.3,
        lm_calls=4,
        lm_tokens=100,
        parameters={"seed": 0},
    )


def test_record_maps_to_a_teaching_example() -> None:
    example = example_from_record(RECORD)
    assert example.query == "Is 2/6 the same as 1/3?"
    assert example.response == "What happens if you split each third into two equal parts?"
    assert example.context == "A fraction names equal parts of a whole."
    assert example.metadata == "grade level: 5; subject: mathematics; teaching style: socratic"
    assert set(example.inputs().keys()) == {"query", "context", "metadata"}
    assert example_from_record({"conversations": [{"role": "user", "content": "hi"}]}) is None


def test_programs_are_versioned_json_state_and_load_back_identically(tmp_path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    repository = ProgramRepository(store)
    program = TutorProgram(chain_of_thought=True)
    program.respond.predict.demos = [example_from_record(RECORD)]
    first = repository.save(program, _info())
    second = repository.save(TutorProgram(chain_of_thought=True), _info())
    assert (first.version, second.version) == ("v1", "v2")
    # JSON, never pickle.
    files = sorted(store.walk("programs/tutor"))
    assert files == [
        "programs/tutor/v1/info.json",
        "programs/tutor/v1/program.json",
        "programs/tutor/v2/info.json",
        "programs/tutor/v2/program.json",
    ]
    json.loads(store.read_text("programs/tutor/v1/program.json"))
    info, loaded = repository.load("tutor", "v1")
    assert info.chain_of_thought and loaded.chain_of_thought
    assert loaded.dump_state() == program.dump_state()
    assert repository.get("tutor").version == "v2"
    assert [p.version for p in repository.list()] == ["v2"]
    with pytest.raises(NotFound, match="tutorforge programs list"):
        repository.get("tutor", "v9")
    with pytest.raises(InvalidArgument):
        repository.get("../etc")


def test_plain_adapter_sends_plain_chat_and_takes_the_whole_reply() -> None:
    adapter = PlainAdapter()
    example = example_from_record(RECORD)
    messages = adapter.format(TeachingSignature, [example], example.inputs().toDict())
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "[[" not in json.dumps(messages) and "{" not in messages[1]["content"]
    assert messages[1]["content"].endswith("Is 2/6 the same as 1/3?")
    assert messages[2]["content"] == example.response
    assert adapter.parse(TeachingSignature, "  Why do you think so?\n") == {
        "response": "Why do you think so?"
    }
    chain = TutorProgram(chain_of_thought=True).respond.predict.signature
    assert adapter.parse(chain, "Thirds are bigger.\nResponse: What is 2 of 6?") == {
        "reasoning": "Thirds are bigger.",
        "response": "What is 2 of 6?",
    }
    assert adapter.parse(chain, "What is 2 of 6?") == {"reasoning": "", "response": "What is 2 of 6?"}
    with pytest.raises(InvalidArgument, match="plain, chat, json"):
        make_adapter("xml")


def test_plain_adapter_parses_replies_a_stock_adapter_cannot() -> None:
    """A small model's reply has no field markers: the plain adapter still gets the response."""
    reply = "Great question! What do you notice when you cut each third in half?"
    lm = dspy.utils.DummyLM([{"unused": reply}])
    with dspy.context(lm=lm, adapter=PlainAdapter()):
        prediction = TutorProgram()(**example_from_record(RECORD).inputs())
    assert reply in prediction.response


def test_targets_parse() -> None:
    assert Target.parse("base") == Target("base", "base")
    assert Target.parse("adapter:math-v1").adapter == "math-v1"
    assert Target.parse("program:tutor").adapter is None
    assert Target.parse("program:tutor@base").adapter == ""
    assert Target.parse("program:tutor@math").adapter == "math"
    for bad in ("", "adapter:", "program:x@", "model:x", "adapter:../x"):
        with pytest.raises(InvalidArgument):
            Target.parse(bad)


def test_report_is_saved_as_json_markdown_and_png(tmp_path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    weights = MetricWeights()
    outcomes = []
    for subject, reply in [
        ("math", "What do you notice? For example, try halves."),
        ("physics", "The answer is 4."),
    ]:
        outcome = Outcome("r", subject, "q?", "halves thirds", "What do you see here?", reply, 1.5)
        outcome.score = score_response(
            reply, context="halves thirds", reference=outcome.reference, weights=weights, similarity=0.5
        )
        outcomes.append(outcome)
    metrics = TargetMetrics.of("base", outcomes)
    assert metrics.question_rate == 0.5 and metrics.answer_reveal_rate == 0.5
    assert metrics.similarity == Summary(0.5, 0.5, 0.5, 0.0)
    assert set(metrics.score_per_subject) == {"math", "physics"}
    report = save_report(
        store,
        EvaluationReport(
            "eval-1", "d", "abc", weights.to_json(), [metrics], {"base": [o.to_json() for o in outcomes]}
        ),
    )
    files = report_files(store, load_report(store, "eval-1"))
    assert set(files) == {
        "report.json",
        "report.md",
        "charts/scores_per_target.png",
        "charts/score_per_subject.png",
    }
    assert all(files[name].startswith(b"\x89PNG") for name in files if name.endswith(".png"))
    markdown = render_markdown(report)
    assert "| base |" in markdown and "charts/scores_per_target.png" in markdown
    with pytest.raises(NotFound):
        load_report(store, "eval-404")
