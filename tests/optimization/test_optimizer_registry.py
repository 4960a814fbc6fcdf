"""The optimizer registry, budgets, the judge's score parsing and promotion rules (no model needed)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import dspy
import pytest

from tutorforge.artifacts.programs import ProgramInfo, ProgramRepository, TeachingProgram
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tutorforge.optimization.cli import OPTIMIZER_CHOICES
from tutorforge.optimization.judge import NAMES, JudgeMetric, JudgeScore, parse_scores
from tutorforge.optimization.lm import BudgetExhausted, LmUsage
from tutorforge.optimization.optimizers import REGISTRY, Budget, CompileInputs, optimizer_spec
from tutorforge.optimization.promotion import promote
from tutorforge.optimization.servicer import optimizer_mapping
from tutorforge.v1 import optimization_pb2 as pb

SMOL = "SmolLM2-135M-Instruct"


def test_every_registry_entry_is_a_proto_value_and_a_cli_choice_and_nothing_else():
    values = {value for name, value in pb.Optimizer.items() if name != "OPTIMIZER_UNSPECIFIED"}
    assert set(optimizer_mapping()) == values
    assert sorted(optimizer_mapping().values()) == sorted(REGISTRY)
    assert OPTIMIZER_CHOICES == {name: pb.Optimizer.Value(spec.proto) for name, spec in REGISTRY.items()}
    # The mapping is read from the entries: a new entry appears with its enum value, no other edit.
    extra = {**REGISTRY, "simba-copy": replace(REGISTRY["simba"], name="simba-copy")}
    assert optimizer_mapping(extra)[pb.OPTIMIZER_SIMBA] == "simba-copy"
    # Names users rely on stay.
    relied_on = {"labeled-fewshot", "bootstrap-fewshot", "bootstrap-random-search", "copro", "mipro", "gepa"}
    assert relied_on <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_entry_maps_a_budget_onto_arguments_its_dspy_class_accepts(name):
    spec = REGISTRY[name]
    lm = dspy.LM("openai/unused", api_base="http://127.0.0.1:9/v1", api_key="x")
    examples = [dspy.Example(query=f"q{i}", response="r").with_inputs("query") for i in range(4)]
    inputs = CompileInputs(Budget(), examples, examples[:2], lambda *a, **k: 1.0, 0, lm, lm)
    init, compile_kwargs = spec.arguments(inputs)
    optimizer = spec.dspy_class(**init)
    assert "trainset" in compile_kwargs
    if name == "bootstrap-fewshot":
        # The seed's defaults: 3 rounds (threads = 4 for the run's scoring).
        assert optimizer.max_rounds == 3 and Budget().threads == 4
    if name == "mipro":
        assert optimizer.auto == "light" and compile_kwargs["num_trials"] is None
        init, compile_kwargs = spec.arguments(replace(inputs, budget=Budget(trials=3, candidates=2)))
        assert init["auto"] is None and compile_kwargs["num_trials"] == 3 and init["num_candidates"] == 2
    if spec.uses_reflection_lm:
        assert any(value is lm for value in init.values())


def test_unknown_optimizer_and_bad_budgets_are_refused():
    assert optimizer_spec("").name == "bootstrap-fewshot"
    with pytest.raises(InvalidArgument, match="optimizer 'annealing' is not known; use one of .*simba"):
        optimizer_spec("annealing")
    with pytest.raises(InvalidArgument, match="max_lm_calls"):
        Budget(max_lm_calls=-1)
    with pytest.raises(InvalidArgument, match="above their ceilings.*max_lm_tokens"):
        Budget(max_lm_tokens=10**12)
    with pytest.raises(InvalidArgument, match="trials"):
        Budget(trials=50_000)


def test_usage_caps_raise_budget_exhausted_until_lifted():
    usage = LmUsage()
    usage.limit(calls=2)
    usage.check()
    usage.add(10, 5)
    usage.add(10, 5)
    with pytest.raises(BudgetExhausted, match="LM-call budget reached"):
        usage.check()
    assert usage.exhausted.startswith("LM-call budget")
    usage.limit()
    usage.check()
    usage.limit(tokens=20)
    usage.add(15, 5)
    with pytest.raises(BudgetExhausted, match="LM-token budget reached"):
        usage.check()
    # The first reason is the one a run records.
    assert usage.exhausted.startswith("LM-call budget")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "mistake_identification: 4\nguidance: 3\nactionability: 5\nnot_revealing: 2\ntone: 5",
            [4, 3, 5, 2, 5],
        ),
        (
            '{"tone": 4, "guidance": 2, "mistake_identification": 5, "actionability": 3, "not_revealing": 1}',
            [5, 2, 3, 1, 4],
        ),
        (
            "**Mistake Identification** - 4/5\n**Providing Guidance**: three\nActionability = 2 out of 5\n"
            "Not revealing the answer: 5\nTutor tone: 4.5",
            [4, 3, 2, 5, 4.5],
        ),
        ("4 3 5 5 4", [4, 3, 5, 5, 4]),
    ],
)
def test_judge_scores_parse_from_any_format(reply, expected):
    assert parse_scores(reply) == dict(zip(NAMES, map(float, expected), strict=True))


def test_judge_replies_without_scores_score_zero_and_partial_ones_average_what_was_given():
    assert parse_scores("I think the reply is good.") == {} and parse_scores("guidance 7, tone 10") == {}
    assert JudgeScore({}, "").score == 0.0
    assert JudgeScore({"guidance": 5.0, "tone": 3.0}, "").score == pytest.approx(0.75)
    assert "guidance" in JudgeScore({"guidance": 1.0, "tone": 5.0}, "").feedback()


class _Replies(dspy.BaseLM):
    """An LM double for the judge's parsing path: replies from a list (the real LM runs in the slow tests)."""

    def __init__(self, replies: list[str]):
        super().__init__(model="replies")
        self.replies = replies

    def __call__(self, request, **kwargs):
        self.seen = request
        return SimpleNamespace(text=self.replies.pop(0))


def test_judge_metric_gives_dspy_a_score_or_score_and_feedback():
    example = dspy.Example(query="Why blue?", context="Rayleigh scattering", final_answer="scatter")
    prediction = dspy.Prediction(response="What happens to light in air?")
    judge = JudgeMetric(_Replies(["guidance: 5\ntone: 5\nactionability: 3\nnot_revealing: 5\nmistake: 3"]))
    assert judge(example, prediction) == pytest.approx(0.8)
    graded = judge.lm.seen.messages[-1].text
    assert "Rayleigh scattering" in graded and "reach themselves: scatter" in graded
    # The rubric, then two graded examples before the reply to grade.
    assert "not_revealing" in judge.lm.seen.system and len(judge.lm.seen.messages) == 5
    with_feedback = JudgeMetric(_Replies(["nonsense"]), with_feedback=True)(example, prediction)
    assert with_feedback.score == 0.0 and "no scores" in with_feedback.feedback


def _save(repo: ProgramRepository, benchmark: float | None, base_model: str = SMOL) -> ProgramInfo:
    info = ProgramInfo("tutor", "", "bootstrap-fewshot", "starter", "1", "", base_model=base_model)
    if benchmark is not None:
        low, high = benchmark - 0.1, benchmark + 0.1
        info.benchmark = {"pedagogical_score": {"mean": benchmark, "low": low, "high": high}}
    return repo.save(TeachingProgram("Guide the student with questions."), info)


def test_promotion_needs_a_better_benchmark_score_unless_forced(tmp_path):
    repo = ProgramRepository(ArtifactStore(str(tmp_path / "store")))
    base = SMOL
    with pytest.raises(NotFound):
        promote(repo, "tutor", base)
    _save(repo, 0.50)
    assert promote(repo, "tutor@v1", base).reason == "already the served version"
    _save(repo, 0.45)
    # Saving a version does not serve it once a version was promoted.
    assert repo.served_version("tutor") == "v1"
    refused = r"does not beat the served tutor@v1.*0\.450 <= 0\.500.*--force"
    with pytest.raises(FailedPrecondition, match=refused):
        promote(repo, "tutor@v2", base)
    assert repo.served_version("tutor") == "v1"
    _save(repo, None)
    with pytest.raises(FailedPrecondition, match="tutor@v3 has no benchmark score"):
        promote(repo, "tutor", base)
    _save(repo, 0.61)
    promoted = promote(repo, "tutor", base)
    assert (promoted.program.version, promoted.previous_version) == ("v4", "v1")
    assert promoted.reason == "benchmark 0.610 > 0.500 (v1)" and repo.served_version("tutor") == "v4"
    forced = promote(repo, "tutor@v3", base, force=True)
    assert forced.reason == "forced" and repo.served_version("tutor") == "v3"
    with pytest.raises(FailedPrecondition, match="served version tutor@v3 has no benchmark score"):
        promote(repo, "tutor@v1", base)


def test_a_program_for_another_base_model_is_never_promoted(tmp_path):
    repo = ProgramRepository(ArtifactStore(str(tmp_path / "store")))
    _save(repo, 0.5)
    _save(repo, 0.9, base_model="Llama-3.1-8B-Instruct")
    for force in (False, True):
        with pytest.raises(FailedPrecondition, match="compiled for base model 'Llama-3.1-8B-Instruct'"):
            promote(repo, "tutor@v2", SMOL, force=force)
    assert repo.served_version("tutor") == "v2" and not repo.store.exists("programs/tutor/served.json")
    with pytest.raises(InvalidArgument, match="version"):
        promote(repo, "tutor@latest", SMOL)
