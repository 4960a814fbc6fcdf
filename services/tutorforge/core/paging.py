"""Paging for List RPCs over lists that are small enough to read whole: keyset tokens, i.e. the key of the
last item given. Unlike an offset, such a token stays right while items are added or removed between pages;
every List RPC pages this way (ListDocuments, ListDatasets, ListJobs, ListAdapters, ListPrograms)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from tutorforge.core.errors import InvalidArgument
from tutorforge.core.validation import echo

T = TypeVar("T")
MAX_PAGE_SIZE = 1000
# Microseconds until the year 2286, so the keys of newer items sort first as plain strings.
_EPOCH_END_US = 10**16


def newest_first(created_at: float) -> str:
    """A fixed-width key part that sorts items created later (a Unix time) first."""
    return f"{_EPOCH_END_US - int(created_at * 1e6):016d}"


def keyset_page(
    items: Sequence[T],
    key: Callable[[T], str],
    page_size: int,
    page_token: str,
    default_size: int = 100,
    token_pattern: re.Pattern[str] | None = None,
) -> tuple[list[T], str]:
    """One page of `items` (sorted by `key`, ascending) after the key in `page_token`, and the key of its last
    item as the next token ("" on the last page). A token that `token_pattern` does not match cannot come
    from a previous page and is refused."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size={page_size} is not valid: use 0 (default {default_size}) to {MAX_PAGE_SIZE}")
    if page_token and token_pattern is not None and not token_pattern.match(page_token):
        raise InvalidArgument(f"page_token {echo(page_token)} is not valid: pass the next_page_token of a previous page")
    size = page_size or default_size
    start = next((i for i, item in enumerate(items) if key(item) > page_token), len(items)) if page_token else 0
    page = list(items[start : start + size])
    return page, key(page[-1]) if page and start + size < len(items) else ""
