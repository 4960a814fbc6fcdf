"""Paging for List RPCs over lists that are small enough to read whole: keyset tokens (the key of the last
item given) and, for lists without a stable key, offsets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def keyset_page(
    items: Sequence[T], key: Callable[[T], str], page_size: int, page_token: str, default_size: int = 100
) -> tuple[list[T], str]:
    """One page of `items` (sorted by `key`, ascending) after the key in `page_token`, and the key of its last
    item as the next token ("" on the last page). Unlike an offset, the token stays right while items are
    added or removed between pages (retrieval's ListDocuments pages the same way)."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size={page_size} is not valid: use 0 (default {default_size}) to {MAX_PAGE_SIZE}")
    size = page_size or default_size
    start = next((i for i, item in enumerate(items) if key(item) > page_token), len(items)) if page_token else 0
    page = list(items[start : start + size])
    return page, key(page[-1]) if page and start + size < len(items) else ""
