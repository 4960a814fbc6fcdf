"""Deterministic train/validation split, stratified by subject."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any


def subject_of(record: dict[str, Any]) -> str:
    return str(record.get("metadata", {}).get("subject", "") or "")


def split_records(
    records: list[dict[str, Any]], validation_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation). Each subject contributes to validation in proportion to its size (largest
    remainder), the choice within a subject is a seeded shuffle of the record ids, and the order of
    `records` is kept in both splits — so the same records and seed always give the same split."""
    if not records or validation_fraction <= 0:
        return list(records), []
    total = round(len(records) * validation_fraction)
    total = min(len(records) - 1, max(1, total)) if len(records) > 1 else 0
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[subject_of(record)].append(record)
    subjects = sorted(groups)
    quotas = {subject: len(groups[subject]) * total / len(records) for subject in subjects}
    counts = {subject: int(quotas[subject]) for subject in subjects}
    by_remainder = sorted(subjects, key=lambda subject: (-(quotas[subject] - counts[subject]), subject))
    for subject in by_remainder[: total - sum(counts.values())]:
        counts[subject] += 1
    held_out: set[str] = set()
    for subject in subjects:
        ids = sorted(record["id"] for record in groups[subject])
        random.Random(f"{seed}:{subject}").shuffle(ids)
        held_out.update(ids[: counts[subject]])
    train = [record for record in records if record["id"] not in held_out]
    validation = [record for record in records if record["id"] in held_out]
    return train, validation
