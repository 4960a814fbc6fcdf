"""Tokenisation, labels and packing with the real SmolLM2 tokenizer and model (no Ray)."""

from __future__ import annotations

import random

import pytest

from tutorforge.core.models import chat_model_path, load_chat_tokenizer
from tutorforge.core.settings import Settings
from tutorforge.training.data import (
    IGNORE_INDEX,
    epoch_batches,
    fit_conversation,
    group_by_length,
    pack_examples,
    packed_batches,
    padded_batches,
    padding_share,
    tokenize_conversation,
    tokenize_records,
)
from tutorforge.training.loop import evaluate_loss, token_loss_sum


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


def assistant_runs(example) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive labelled tokens."""
    runs, start = [], None
    for index, label in enumerate([*example.labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = index
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, index))
            start = None
    return runs


@pytest.mark.parametrize("with_system", [True, False])
def test_labels_are_exactly_the_assistant_content_and_its_im_end(tokenizer, with_system) -> None:
    """Every user turn (and the system prompt, given or the template's default) is -100; each assistant
    turn's content tokens and its closing <|im_end|> carry their own ids, nothing else does."""
    messages = conversation("fractions", 3)[0 if with_system else 1 :]
    example = tokenize_conversation(tokenizer, messages)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = assistant_runs(example)
    assert len(runs) == len(answers) == 3
    for (start, end), answer in zip(runs, answers):
        ids = example.input_ids[start:end]
        assert example.labels[start:end] == ids
        assert ids == tokenizer(answer, add_special_tokens=False)["input_ids"] + [im_end]
        # Right before each labelled run: the assistant header, unlabelled.
        assert example.input_ids[start - len(header) : start] == header
    labelled = {i for start, end in runs for i in range(start, end)}
    assert all(example.labels[i] == IGNORE_INDEX for i in range(len(example)) if i not in labelled)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert example.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    if not with_system:
        assert rendered.startswith("<|im_start|>system\n")  # the template's default system prompt


def test_records_without_assistant_tokens_are_dropped(tokenizer) -> None:
    records = [
        {"id": "ok", "conversations": conversation("gravity", 1)},
        {"id": "no-assistant", "conversations": [{"role": "user", "content": "hello"}]},
    ]
    split = tokenize_records(tokenizer, records, max_seq_length=512)
    assert split.dropped == 1 and split.shortened == {} and len(split.examples) == 1


def grounded(passage_sentences: int, exchanges: int) -> list[dict[str, str]]:
    """A record shaped like the grounded ones: a system prompt carrying a course excerpt."""
    passage = " ".join(
        f"Sentence {i} of the lesson says that plants turn light, water and carbon dioxide into sugar."
        for i in range(passage_sentences)
    )
    messages = [{"role": "system", "content": f"You are a Socratic tutor. Passage:\n{passage}"}]
    for turn in range(exchanges):
        messages.append({"role": "user", "content": f"Why do leaves need light? ({turn})"})
        messages.append({"role": "assistant", "content": f"What does the passage say light is for? ({turn})"})
    return messages


def test_long_records_keep_their_assistant_turns(tokenizer) -> None:
    """A record over max_seq_length loses trailing exchanges first, then the end of its course excerpt;
    its assistant turns keep their labels and <|im_end|> instead of being cut away."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    long_dialogue = conversation("gravity", 8)
    full = tokenize_conversation(tokenizer, long_dialogue)
    example, how = fit_conversation(tokenizer, long_dialogue, len(full) // 2)
    assert how == "turns" and len(example) <= len(full) // 2
    runs = assistant_runs(example)
    assert runs and example.input_ids[runs[-1][1] - 1] == im_end
    assert example.input_ids == full.input_ids[: len(example)]

    record = grounded(passage_sentences=30, exchanges=1)
    full = tokenize_conversation(tokenizer, record)
    assert len(full) > 256
    example, how = fit_conversation(tokenizer, record, 256)
    assert how == "system" and len(example) <= 256
    (start, end), = assistant_runs(example)
    assert tokenizer.decode(example.labels[start:end]) == record[2]["content"] + "<|im_end|>"
    text = tokenizer.decode(example.input_ids)
    assert "Sentence 0 of the lesson" in text and "Sentence 29" not in text and "Why do leaves" in text

    # The old way, cutting the tokens, would have left no assistant token at all.
    assert sum(1 for label in full.labels[:256] if label != IGNORE_INDEX) == 0
    split = tokenize_records(tokenizer, [{"conversations": record}, {"conversations": long_dialogue}], 256)
    assert split.shortened == {"system": 1, "turns": 1} and split.dropped == 0

    # Nothing left to shorten but the tokens themselves: cut, and reported as such.
    example, how = fit_conversation(tokenizer, conversation("atoms", 1)[1:], 24)
    assert how == "cut" and len(example) == 24


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
    # Each packed example keeps exactly its own labels: nothing leaks across a boundary.
    by_ids = {tuple(e.input_ids): e.labels for e in examples}
    for row in rows:
        offset = 0
        for length in row.segments:
            ids = tuple(row.input_ids[offset : offset + length])
            assert row.labels[offset : offset + length] == by_ids[ids]
            offset += length


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


@pytest.mark.slow  # 50-140 s on the shared machine: two forward/backward passes of the real model
def test_loss_on_labelled_positions_only_equals_the_full_logits_loss(tokenizer, settings: Settings) -> None:
    """token_loss_sum runs the output layer only where a label is predicted; the loss and the LoRA
    gradients are those of the full-logits cross-entropy."""
    import torch
    import torch.nn.functional as F

    from tutorforge.training.config import LoraSpec
    from tutorforge.training.modeling import choose_device, load_for_training

    records = [{"conversations": conversation(t, 1 + i % 3)} for i, t in enumerate(TOPICS)]
    examples = tokenize_records(tokenizer, records, 512).examples
    batch = packed_batches(pack_examples(examples, 256), 1, tokenizer.pad_token_id)[0]
    device = choose_device(False, False, 0)
    model = load_for_training(chat_model_path(settings.models), LoraSpec(), device, 256, 0).eval()
    with torch.no_grad():  # a non-zero adapter, so its gradients are not trivially zero
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.01)
    inputs = batch.tensors()
    labels = inputs.pop("labels")
    logits = model(**inputs, use_cache=False).logits
    full = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum"
    )
    full.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    loss = token_loss_sum(model, batch, "cpu")
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(full.detach()), rel=1e-5)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert torch.allclose(parameter.grad, expected[name], rtol=1e-3, atol=1e-6), name


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
