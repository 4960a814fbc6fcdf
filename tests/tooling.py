"""What a test does when the real tool it needs (podman, helm, checkov, buf, …) is missing: skip on a
developer's machine, fail under CI=true — a green CI run must mean the tool really ran."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool fails the test)", pytrace=False)
    pytest.skip(reason)
