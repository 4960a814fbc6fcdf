"""Turning dataset records into training batches.

- Tokenisation renders each conversation with the base model's chat template; only the assistant turns
  (their text and end-of-turn token) get labels, everything else is -100.
- A record longer than `max_seq_length` is shortened so that its assistant turns survive: trailing
  exchanges go first, then the end of the system prompt (a course excerpt), and only then is the
  token sequence cut (`fit_conversation`).
- Packing concatenates examples into rows of `max_seq_length` tokens. Position ids restart at 0 for each
  example, and with no attention mask transformers turns those restarts into a block-diagonal causal
  mask (`masking_utils.find_packed_sequence_indices`, works with sdpa and eager on CPU), so an example
  never attends to, or predicts, its neighbours.
- Without packing, rows are padded to the longest in the batch; grouping by length keeps that waste low.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tutorforge.core.errors import InvalidArgument

IGNORE_INDEX = -100


@dataclass
class Example:
    """One tokenised conversation."""

    input_ids: list[int]
    labels: list[int]
    # Lengths of the examples packed into this row (None = one example).
    segments: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def label_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class Batch:
    """Rows of equal length. `position_ids` restart per packed example; `attention_mask` is set only for
    padded (unpacked) batches."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    position_ids: list[list[int]]
    attention_mask: list[list[int]] | None
    # Tokens that belong to an example (the rest is padding).
    real_tokens: int

    @property
    def total_tokens(self) -> int:
        return sum(len(row) for row in self.input_ids)

    @property
    def label_tokens(self) -> int:
        return sum(1 for row in self.labels for label in row if label != IGNORE_INDEX)

    def tensors(self, device: Any = "cpu") -> dict[str, Any]:
        import torch

        tensors = {
            "input_ids": torch.tensor(self.input_ids, dtype=torch.long, device=device),
            "labels": torch.tensor(self.labels, dtype=torch.long, device=device),
            "position_ids": torch.tensor(self.position_ids, dtype=torch.long, device=device),
        }
        if self.attention_mask is not None:
            tensors["attention_mask"] = torch.tensor(self.attention_mask, dtype=torch.long, device=device)
        return tensors


@dataclass
class TokenizedSplit:
    examples: list[Example]
    # Records dropped because no assistant token fit in max_seq_length (or none existed).
    dropped: int
    # Records shortened to fit, by how (see `fit_conversation`): "turns", "system" or "cut".
    shortened: dict[str, int] = field(default_factory=dict)


def tokenize_conversation(tokenizer: Any, messages: Sequence[dict[str, str]]) -> Example:
    """Tokens of the rendered conversation, labels only on assistant content and end-of-turn tokens."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # The assistant's text is what the template adds between "prompt up to this turn" and "this turn".
        start = len(
            tokenizer.apply_chat_template(list(messages[:index]), tokenize=False, add_generation_prompt=True)
        )
        rendered = tokenizer.apply_chat_template(list(messages[: index + 1]), tokenize=False)
        if not text.startswith(rendered):
            raise InvalidArgument(
                "the base model's chat template renders conversations differently by prefix, so assistant "
                "turns cannot be located; use a model whose template appends turns"
            )
        end = len(rendered.rstrip())
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    offsets = list(encoded["offset_mapping"])
    labels = [
        token if any(start <= offset[0] < end for start, end in spans) else IGNORE_INDEX
        for token, offset in zip(input_ids, offsets)
    ]
    # The first token is never predicted (and never predicted across a packed boundary).
    if labels:
        labels[0] = IGNORE_INDEX
    return Example(input_ids=input_ids, labels=labels)


def fit_conversation(
    tokenizer: Any, messages: Sequence[dict[str, str]], max_seq_length: int
) -> tuple[Example, str]:
    """The conversation as an example of at most `max_seq_length` tokens, and how it was shortened ("" =
    not at all). Cutting the token sequence would silently lose the assistant turns that the loss is
    about, so first keep the longest prefix that ends with a whole assistant turn ("turns"); when not even
    the first exchange fits, shorten the end of the system prompt (a course excerpt) until it does
    ("system"); only when that is not enough cut the tokens ("cut")."""
    messages = list(messages)
    example = tokenize_conversation(tokenizer, messages)
    if len(example) <= max_seq_length:
        return example, ""
    assistant_ends = [i + 1 for i, m in enumerate(messages) if m["role"] == "assistant"]
    for end in reversed([end for end in assistant_ends if end < len(messages)]):
        shorter = tokenize_conversation(tokenizer, messages[:end])
        if len(shorter) <= max_seq_length:
            return shorter, "turns"
    if assistant_ends and messages[0]["role"] == "system":
        head = messages[: assistant_ends[0]]
        system = tokenizer(head[0]["content"], add_special_tokens=False)["input_ids"]
        excess = len(tokenize_conversation(tokenizer, head)) - max_seq_length
        # Re-tokenising at the cut can merge tokens differently: retry with the new excess a few times.
        for _ in range(4):
            keep = len(system) - excess - 1
            if keep <= 0:
                break
            content = tokenizer.decode(system[:keep]).rstrip() + "…"
            shorter = tokenize_conversation(tokenizer, [{**head[0], "content": content}, *head[1:]])
            if len(shorter) <= max_seq_length:
                return shorter, "system"
            excess += len(shorter) - max_seq_length
    cut = Example(example.input_ids[:max_seq_length], example.labels[:max_seq_length])
    return cut, "cut"


def tokenize_records(
    tokenizer: Any, records: Sequence[dict[str, Any]], max_seq_length: int
) -> TokenizedSplit:
    examples, dropped, shortened = [], 0, {}
    for number, record in enumerate(records):
        messages = record.get("conversations")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise InvalidArgument(
                f"dataset record {record.get('id', number)!r} has no valid 'conversations' list"
            )
        example, how = fit_conversation(tokenizer, messages, max_seq_length)
        if how:
            shortened[how] = shortened.get(how, 0) + 1
        if example.label_tokens == 0:
            dropped += 1
            continue
        examples.append(example)
    return TokenizedSplit(examples=examples, dropped=dropped, shortened=shortened)


def pack_examples(examples: Sequence[Example], max_seq_length: int) -> list[Example]:
    """First-fit-decreasing bin packing into rows of at most `max_seq_length` tokens; each row records
    its examples' lengths in `segments`."""
    bins: list[list[Example]] = []
    room: list[int] = []
    for example in sorted(examples, key=len, reverse=True):
        for index, free in enumerate(room):
            if len(example) <= free:
                bins[index].append(example)
                room[index] -= len(example)
                break
        else:
            bins.append([example])
            room.append(max_seq_length - len(example))
    rows = [
        Example(
            input_ids=[token for part in parts for token in part.input_ids],
            labels=[label for part in parts for label in part.labels],
            segments=[len(part) for part in parts],
        )
        for parts in bins
    ]
    return sorted(rows, key=len, reverse=True)


def packed_batches(rows: Sequence[Example], batch_size: int, pad_token_id: int) -> list[Batch]:
    """Batches of packed rows padded to the longest row; the padding tail is its own position-id block."""
    batches = []
    for first in range(0, len(rows), batch_size):
        chunk = rows[first : first + batch_size]
        width = max(len(row) for row in chunk)
        input_ids, labels, positions, real = [], [], [], 0
        for row in chunk:
            lengths = row.segments or [len(row)]
            pad = width - len(row)
            input_ids.append(row.input_ids + [pad_token_id] * pad)
            labels.append(row.labels + [IGNORE_INDEX] * pad)
            positions.append([p for length in lengths for p in range(length)] + list(range(pad)))
            real += len(row)
        batches.append(Batch(input_ids, labels, positions, None, real))
    return batches


def padded_batches(examples: Sequence[Example], batch_size: int, pad_token_id: int) -> list[Batch]:
    """Batches padded (right side) to their longest example, with an attention mask."""
    batches = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        width = max(len(example) for example in chunk)
        input_ids, labels, positions, masks, real = [], [], [], [], 0
        for example in chunk:
            pad = width - len(example)
            input_ids.append(example.input_ids + [pad_token_id] * pad)
            labels.append(example.labels + [IGNORE_INDEX] * pad)
            positions.append(list(range(len(example))) + [0] * pad)
            masks.append([1] * len(example) + [0] * pad)
            real += len(example)
        batches.append(Batch(input_ids, labels, positions, masks, real))
    return batches


def group_by_length(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[Example]:
    """Shuffle, then sort within mega-batches of 50 batches so that batches hold similar lengths
    (less padding) while their order stays random."""
    order = list(examples)
    rng.shuffle(order)
    mega = batch_size * 50
    grouped: list[list[Example]] = []
    for first in range(0, len(order), mega):
        chunk = sorted(order[first : first + mega], key=len, reverse=True)
        grouped.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(grouped)
    return [example for batch in grouped for example in batch]


def epoch_batches(
    examples: Sequence[Example],
    *,
    batch_size: int,
    max_seq_length: int,
    pad_token_id: int,
    packing: bool,
    group_lengths: bool,
    seed: int,
    epoch: int,
) -> list[Batch]:
    """The batches of one epoch, in a deterministic order (seed, epoch): a resumed run replays the same
    order and skips what it already did."""
    rng = random.Random(seed * 1_000_003 + epoch)
    if packing:
        # Rows come out of the packer fullest first: batching them in that order leaves the few
        # part-filled rows together in the last batch, and shuffling whole batches keeps the order random.
        batches = packed_batches(pack_examples(examples, max_seq_length), batch_size, pad_token_id)
        rng.shuffle(batches)
        return batches
    if group_lengths:
        ordered = group_by_length(examples, batch_size, rng)
    else:
        ordered = list(examples)
        rng.shuffle(ordered)
    return padded_batches(ordered, batch_size, pad_token_id)


def padding_share(batches: Sequence[Batch]) -> float:
    total = sum(batch.total_tokens for batch in batches)
    return 0.0 if total == 0 else 1.0 - sum(batch.real_tokens for batch in batches) / total
