"""Metadata filters: validated against the known fields, then turned into store conditions (for
Search) or evaluated on document records (for ListDocuments).

Fields are the seed schema (source, category, topic), document_id, and the keys of `extra` that some
ingested document used, written either as `key` or `extra.key`. Known extra keys live in the artifact
store (`retrieval/extra_keys.json`) with whether all their values were numbers (range filters need that)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from tutorforge.artifacts.store import ArtifactStore
from tutorforge.core.errors import InvalidArgument
from tutorforge.retrieval.documents import SEED_FIELDS, DocumentRecord
from tutorforge.retrieval.store import Condition, Match, Range

TEXT_FIELDS = ("document_id", *SEED_FIELDS)


@dataclass(frozen=True)
class FieldFilter:
    """One condition: `equals` a value, is `any_of` some values, or lies in a numeric range."""

    field: str
    equals: str | None = None
    any_of: tuple[str, ...] | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @property
    def is_range(self) -> bool:
        return any(bound is not None for bound in (self.gt, self.gte, self.lt, self.lte))


def as_number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class ExtraKeys:
    """The registry of extra metadata keys: {key: numeric?}, cached, re-read when a key is missing."""

    KEY = "retrieval/extra_keys.json"

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._lock = threading.Lock()
        self._known: dict[str, bool] | None = None

    def _load(self) -> dict[str, bool]:
        return dict(self.store.read_json(self.KEY)) if self.store.exists(self.KEY) else {}

    def lookup(self, key: str) -> bool | None:
        """True/False = known (numeric or not), None = unknown."""
        with self._lock:
            if self._known is None or key not in self._known:
                self._known = self._load()
            return self._known.get(key)

    def register(self, extra: dict[str, str]) -> None:
        with self._lock:
            known = self._load()
            changed = False
            for key, value in extra.items():
                numeric = as_number(value) is not None and known.get(key, True)
                if known.get(key) != numeric:
                    known[key] = numeric
                    changed = True
            if changed:
                self.store.write_json(self.KEY, known)
            self._known = known


@dataclass(frozen=True)
class ResolvedFilter:
    spec: FieldFilter
    # "document_id", a seed field, or an extra key.
    name: str
    is_extra: bool


def resolve(filters: list[FieldFilter], extra_keys: ExtraKeys) -> list[ResolvedFilter]:
    resolved = []
    for position, spec in enumerate(filters):
        where = f"filters[{position}]"
        name = spec.field.strip()
        if name.startswith("extra."):
            name, is_extra = name[len("extra.") :], True
        else:
            is_extra = name not in TEXT_FIELDS
        numeric = extra_keys.lookup(name) if is_extra else False
        if not name or (is_extra and numeric is None):
            raise InvalidArgument(
                f"{where}.field {spec.field!r} is not a known metadata field; use source, category, topic, "
                "document_id, or an extra key some document was ingested with"
            )
        conditions = sum([spec.equals is not None, spec.any_of is not None, spec.is_range])
        if conditions != 1:
            raise InvalidArgument(f"{where} ({spec.field}) needs exactly one of equals, any_of or range")
        if spec.any_of is not None and not spec.any_of:
            raise InvalidArgument(f"{where}.any_of ({spec.field}) is empty; give at least one value")
        if spec.is_range and not numeric:
            raise InvalidArgument(
                f"{where}.range: field {spec.field!r} holds text, not numbers; range filters apply to extra keys "
                "whose values are all numbers"
            )
        resolved.append(ResolvedFilter(spec, name, is_extra))
    return resolved


def store_conditions(filters: list[ResolvedFilter]) -> tuple[Condition, ...]:
    conditions: list[Condition] = []
    for item in filters:
        spec = item.spec
        if spec.is_range:
            conditions.append(Range(f"extra_num.{item.name}", gt=spec.gt, gte=spec.gte, lt=spec.lt, lte=spec.lte))
        else:
            key = f"extra.{item.name}" if item.is_extra else item.name
            values = (spec.equals,) if spec.equals is not None else tuple(spec.any_of or ())
            conditions.append(Match(key, values))
    return tuple(conditions)


def record_matches(record: DocumentRecord, filters: list[ResolvedFilter]) -> bool:
    for item in filters:
        spec = item.spec
        if item.is_extra:
            value = record.metadata.extra.get(item.name)
        elif item.name == "document_id":
            value = record.document_id
        else:
            value = getattr(record.metadata, item.name)
        if value is None:
            return False
        if spec.is_range:
            number = as_number(value)
            if number is None or not _in_range(number, spec):
                return False
        elif spec.equals is not None and value != spec.equals:
            return False
        elif spec.any_of is not None and value not in spec.any_of:
            return False
    return True


def _in_range(number: float, spec: FieldFilter) -> bool:
    return (
        (spec.gt is None or number > spec.gt)
        and (spec.gte is None or number >= spec.gte)
        and (spec.lt is None or number < spec.lt)
        and (spec.lte is None or number <= spec.lte)
    )
