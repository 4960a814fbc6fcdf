"""Tokenisation, labels and packing with the real SmolLM2 tokenizer and model (no Ray)."""

from __future__ import annotations

import random

import pytest

from tutorforge.core.models import chat_model_path, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.training.data import (
    IGNORE_INDEX,
    epoch_batches,
    group_by_length,
    pack_examples,
    packed_batches,
    padded_batches,
    padding_share,
    tokenize_conversation,
    tokenize_records,
)
from tutorforge.training.loop import evaluate_loss


def conversation(topic: str, turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": f"You are a Socratic tutor for {topic}."}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn} about {topic}: what is the answer?"})
        messages.append(
            {"role": "assistant", "content": f"What do you already know about {topic}, step {turn}?"}
        )
    return messages


TOPICS = [
    "fractions",
    "photosynthesis",
    "gravity",
    "loops",
    "atoms",
    "plate tectonics",
    "the water cycle",
    "essays",
]


@pytest.fixture
def tokenizer(settings: Settings):
    return load_chat_tokenizer(settings.models)


def test_only_assistant_turns_are_labelled(tokenizer) -> None:
    messages = conversation("fractions", 2)
    example = tokenize_conversation(tokenizer, messages)
    labelled = tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    )
    assert labelled == (
        "What do you already know about fractions, step 0?<|im_end|>"
        "What do you already know about fractions, step 1?<|im_end|>"
    )
    # Nothing of the system prompt or the user turns is trained on.
    assert "Socratic tutor" not in labelled and "Question" not in labelled
    assert (
        example.input_ids
        == tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)[
            "input_ids"
        ]
    )


def test_truncation_and_records_without_assistant_tokens(tokenizer) -> None:
    records = [
        {"id": "long", "conversations": conversation("gravity", 6)},
        {"id": "no-assistant", "conversations": [{"role": "user", "content": "hello"}]},
    ]
    split = tokenize_records(tokenizer, records, max_seq_length=80)
    assert split.dropped == 1 and split.truncated == 1
    assert len(split.examples) == 1 and len(split.examples[0]) == 80


def test_packing_keeps_sequences_apart(tokenizer) -> None:
    examples = tokenize_records(
        tokenizer, [{"conversations": conversation(t, 1 + i % 3)} for i, t in enumerate(TOPICS)], 512
    ).examples
    rows = pack_examples(examples, 256)
    assert len(rows) < len(examples)
    assert sorted(len(e) for e in examples) == sorted(n for row in rows for n in row.segments)
    batch = packed_batches(rows, batch_size=len(rows), pad_token_id=tokenizer.pad_token_id)[0]
    for row, positions in zip(rows, batch.position_ids):
        starts = [i for i, p in enumerate(positions) if p == 0]
        # A position restart at each packed example (and at the padding tail, if any).
        assert starts[: len(row.segments)] == [sum(row.segments[:k]) for k in range(len(row.segments))]
        # The first token of each example is never a label: no prediction across a boundary.
        assert all(row.labels[start] == IGNORE_INDEX for start in starts[: len(row.segments)])
    assert batch.attention_mask is None


def test_packing_gives_the_same_loss_as_padding(tokenizer, settings: Settings) -> None:
    """Block-diagonal attention from position ids: packed rows score each example exactly as alone."""
    import torch
    from transformers import AutoModelForCausalLM

    records = [{"conversations": conversation(t, 1 + i % 3)} for i, t in enumerate(TOPICS)]
    examples = tokenize_records(tokenizer, records, 512).examples
    model = AutoModelForCausalLM.from_pretrained(chat_model_path(settings.models), dtype=torch.float32)
    pad = tokenizer.pad_token_id
    packed = packed_batches(pack_examples(examples, 256), 2, pad)
    padded = padded_batches(examples, 3, pad)
    packed_sum, packed_tokens = evaluate_loss(model, packed, "cpu")
    padded_sum, padded_tokens = evaluate_loss(model, padded, "cpu")
    assert packed_tokens == padded_tokens == sum(e.label_tokens for e in examples)
    assert packed_sum / packed_tokens == pytest.approx(padded_sum / padded_tokens, rel=1e-3)
    # Without the per-sequence restarts the packed rows would attend across examples: a different loss.
    leaky = packed
    for batch in leaky:
        batch.position_ids = [list(range(len(row))) for row in batch.position_ids]
    leaky_sum, _ = evaluate_loss(model, leaky, "cpu")
    assert abs(leaky_sum - padded_sum) / padded_sum > 1e-3


def test_group_by_length_and_packing_cut_padding(tokenizer) -> None:
    records = [{"conversations": conversation(t, 1 + (i * 7) % 5)} for i, t in enumerate(TOPICS * 12)]
    examples = tokenize_records(tokenizer, records, 512).examples
    pad = tokenizer.pad_token_id
    shuffled = list(examples)
    random.Random(0).shuffle(shuffled)
    plain = padding_share(padded_batches(shuffled, 4, pad))
    grouped = padding_share(padded_batches(group_by_length(examples, 4, random.Random(0)), 4, pad))
    packed = padding_share(
        epoch_batches(
            examples,
            batch_size=2,
            max_seq_length=512,
            pad_token_id=pad,
            packing=True,
            group_lengths=False,
            seed=0,
            epoch=0,
        )
    )
    assert grouped < plain
    assert packed < 0.05


def test_epoch_order_is_deterministic_per_epoch(tokenizer) -> None:
    examples = tokenize_records(
        tokenizer, [{"conversations": conversation(t, 2)} for t in TOPICS], 512
    ).examples
    kwargs = dict(batch_size=2, max_seq_length=512, pad_token_id=0, packing=False, group_lengths=True, seed=3)
    first = epoch_batches(examples, epoch=0, **kwargs)
    assert [b.input_ids for b in first] == [b.input_ids for b in epoch_batches(examples, epoch=0, **kwargs)]
    assert [b.input_ids for b in first] != [b.input_ids for b in epoch_batches(examples, epoch=1, **kwargs)]
