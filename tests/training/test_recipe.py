"""The default recipe (what a request without arguments trains with), early stopping's bookkeeping, and
recording a benchmark's scores on a published adapter version in the registry."""

from __future__ import annotations

import json

import pytest

from tutorforge.artifacts.adapters import AdapterRegistry
from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument, NotFound
from tutorforge.core.models import chat_model_path
from tutorforge.core.settings import Settings
from tutorforge.training.config import EVALUATIONS_PER_RUN, LoraSpec, TrainArgs, TrainingSpec
from tutorforge.training.loop import EarlyStopping
from tutorforge.training.service import TrainingService
from tutorforge.training.servicer import spec_from_proto
from tutorforge.v1 import training_pb2


def test_a_request_without_arguments_gets_the_default_recipe(settings: Settings) -> None:
    service = TrainingService(settings, ArtifactStore(settings.store_url))
    spec = spec_from_proto(training_pb2.StartTrainingRequest(dataset="d", adapter_name="a"), service)
    args = spec.validate().args
    assert (args.learning_rate, args.lr_scheduler, args.warmup_ratio) == (1e-3, "cosine", 0.1)
    assert (args.epochs, args.max_seq_length, args.batch_size, args.gradient_accumulation_steps) == (
        1.0,
        512,
        2,
        1,
    )
    assert args.eval_steps is None and args.early_stopping_patience == 3
    assert (spec.lora.rank, spec.lora.alpha, spec.lora.target_modules) == (16, 32.0, [])
    # Unset: about five evaluations per run; explicit values, 0 included, are kept.
    assert [args.evaluation_interval(total) for total in (3, 20, 92)] == [1, 4, 19]
    assert 92 / args.evaluation_interval(92) <= EVALUATIONS_PER_RUN
    explicit = training_pb2.TrainingArguments(eval_steps=0, early_stopping_patience=0)
    spec = spec_from_proto(
        training_pb2.StartTrainingRequest(dataset="d", adapter_name="a", arguments=explicit), service
    )
    assert spec.args.evaluation_interval(50) == 0 and spec.args.early_stopping_patience == 0
    # A resumed job rebuilds its spec from the stored JSON, defaults included.
    assert TrainingSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_early_stopping_counts_evaluations_without_improvement() -> None:
    early = EarlyStopping(patience=2, min_delta=0.05)
    assert early.update(10, 2.0)  # the first evaluation is the best so far
    assert early.update(20, 1.98)  # a new best, but within min_delta: it counts as no improvement
    assert (early.best_step, early.bad_evals, early.stopped) == (20, 1, False)
    assert not early.update(30, 2.3)
    assert early.stopped and early.best_step == 20 and early.best_eval_loss == pytest.approx(1.98)
    restored = EarlyStopping(patience=2, min_delta=0.05)
    restored.restore(json.loads(json.dumps(early.state())))
    assert restored == early
    never = EarlyStopping(patience=0, min_delta=0.0)
    for step, loss in enumerate([1.0, 2.0, 3.0, 4.0]):
        never.update(step, loss)
    assert not never.stopped and never.best_step == 0


@pytest.fixture
def published(settings: Settings, tmp_path):
    """A real LoRA adapter of the base model, published twice (v1, v2)."""
    from tutorforge.training.modeling import choose_device, load_for_training

    model = load_for_training(
        chat_model_path(settings.models), LoraSpec(rank=4, alpha=8), choose_device(False, False, 0), 64, 0
    )
    model.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    registry = AdapterRegistry(ArtifactStore(settings.store_url))
    for _ in range(2):
        registry.register(tmp_path / "adapter", "tutor", "SmolLM2-135M-Instruct", {"subject": "maths"})
    return registry


def test_record_benchmark_adds_the_summary_to_one_version(published: AdapterRegistry) -> None:
    scores = {
        "pedagogical_score": {"value": 0.71, "low": 0.64, "high": 0.78},
        "question_rate": {"value": 0.8, "low": 0.7, "high": 0.88},
        "answer_reveal_rate": 0.22,
        "items": 50,
        "suite": "tutor_turns",
    }
    record = published.record_benchmark("tutor", "v1", scores)
    stored = published.get("tutor", "v1")
    assert stored.metadata == record.metadata
    assert stored.metadata["subject"] == "maths"
    assert stored.metadata["benchmark.pedagogical_score.value"] == "0.71"
    assert stored.metadata["benchmark.question_rate.low"] == "0.7"
    assert stored.metadata["benchmark.answer_reveal_rate"] == "0.22"
    assert stored.metadata["benchmark.items"] == "50" and stored.metadata["benchmark.suite"] == "tutor_turns"
    assert stored.lineage["benchmark"]["question_rate"] == scores["question_rate"]
    assert "benchmark.items" not in published.get("tutor", "v2").metadata

    # A new run replaces the previous summary instead of mixing with it.
    published.record_benchmark("tutor", "v1", {"question_rate": 0.5})
    stored = published.get("tutor", "v1")
    assert {k: v for k, v in stored.metadata.items() if k.startswith("benchmark.")} == {
        "benchmark.question_rate": "0.5"
    }
    assert stored.lineage["benchmark"]["question_rate"] == 0.5


@pytest.mark.parametrize(
    ("version", "scores", "error", "named"),
    [
        ("v1", {"question_rate": float("nan")}, InvalidArgument, "scores.question_rate"),
        ("v1", {"question_rate": {"low": "x" * 300}}, InvalidArgument, "scores.question_rate.low"),
        ("v1", {"question_rate": [0.7, 0.9]}, InvalidArgument, "scores.question_rate"),
        ("v1", {"bad name!": 1.0}, InvalidArgument, "bad name!"),
        ("v1", {}, InvalidArgument, "scores"),
        ("", {"question_rate": 0.8}, InvalidArgument, "version"),
        ("v9", {"question_rate": 0.8}, NotFound, "tutor@v9"),
    ],
)
def test_refused_scores_change_nothing(published: AdapterRegistry, version, scores, error, named) -> None:
    before = published.store.read_bytes("adapters/tutor/v1/adapter.json")
    with pytest.raises(error) as caught:
        published.record_benchmark("tutor", version, scores)
    assert named in str(caught.value)
    assert published.store.read_bytes("adapters/tutor/v1/adapter.json") == before


def test_train_args_defaults_match_the_documented_recipe() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    args = TrainArgs()
    for fragment in (
        f"lr {args.learning_rate:g}",
        f"{args.warmup_ratio:.0%} warm-up",
        f"max sequence length {args.max_seq_length}",
        f"patience {args.early_stopping_patience}",
    ):
        assert fragment in doc, fragment


def test_checkpoints_carry_the_best_weights_and_early_stopping_state(settings: Settings, tmp_path) -> None:
    """What a worker restart or ResumeJob reads back: the best evaluated adapter weights (in `best/`) and
    the early-stopping state, beside the current weights and optimizer state."""
    import torch

    from tutorforge.training.loop import adapter_snapshot, load_checkpoint, save_checkpoint
    from tutorforge.training.modeling import choose_device, load_for_training

    def fresh():
        model = load_for_training(
            chat_model_path(settings.models), LoraSpec(rank=4, alpha=8), choose_device(False, False, 0), 64, 0
        )
        trainable = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(trainable, lr=1e-3)

    model, optimizer = fresh()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)
    best = adapter_snapshot(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(-1.0)
    early = EarlyStopping(patience=3, min_delta=0.0)
    early.update(4, 2.5)
    early.update(8, 2.7)
    save_checkpoint(tmp_path, model, optimizer, {"step": 8, "early_stopping": early.state()}, best)

    restored, restored_optimizer = fresh()
    state = load_checkpoint(tmp_path, restored, restored_optimizer)
    assert state["step"] == 8 and state["early_stopping"] == early.state()
    assert state["best_weights"].keys() == best.keys()
    assert all(torch.equal(state["best_weights"][k], best[k]) for k in best)
    current = adapter_snapshot(restored)
    assert all(torch.equal(current[k], torch.full_like(current[k], -1.0)) for k in current if "lora_B" in k)
