"""Validation of user-chosen names (datasets, adapters, programs): they become storage keys."""

from __future__ import annotations

import re

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.validation import echo

# The base model (no adapter), as users, targets, reports and metric labels name it. Inside the inference
# service the base is the empty adapter name.
BASE = "base"

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Ids the server made (jobs, evaluations, documents' storage keys): anything else names nothing stored.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(name: str, field: str = "name") -> str:
    """Return `name` if it is a safe identifier, else raise InvalidArgument naming `field`."""
    if not name:
        raise InvalidArgument(f"{field} is required")
    if not NAME_PATTERN.match(name) or ".." in name:
        raise InvalidArgument(
            f"{field} {echo(name)} is not valid: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return name


def is_id(value: str) -> bool:
    """Whether `value` can be a server-made id (no '/', '..', control characters); False means NOT_FOUND."""
    return bool(ID_PATTERN.match(value)) and ".." not in value


def adapter_for(model: str) -> str:
    """The adapter a user-facing model name selects: "" (the base model) for "" or BASE."""
    return "" if model in ("", BASE) else model


def model_label(adapter: str) -> str:
    """How the model behind `adapter` is shown: the adapter's name, or BASE."""
    return adapter or BASE
