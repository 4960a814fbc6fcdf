"""Offset paging for List RPCs over lists that are small enough to read whole."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.validation import echo

T = TypeVar("T")
MAX_PAGE_SIZE = 1000


def offset_page(items: Sequence[T], page_size: int, page_token: str, default_size: int = 100) -> tuple[list[T], str]:
    """One page of `items` and the token of the next page ("" on the last page)."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size={page_size} is not valid: use 0 (default {default_size}) to {MAX_PAGE_SIZE}")
    if page_token and not page_token.isdigit():
        raise InvalidArgument(f"page_token {echo(page_token)} is not valid: pass the next_page_token of a previous page")
    size = page_size or default_size
    offset = int(page_token or 0)
    end = offset + size
    return list(items[offset:end]), str(end) if end < len(items) else ""
