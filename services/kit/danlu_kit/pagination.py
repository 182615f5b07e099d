"""Opaque page tokens for List methods (offset-free: they carry the last key seen)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from danlu_kit.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.from_violations(
            "INVALID_PAGE_SIZE", [FieldViolation("page_size", "must not be negative")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(last_key).encode()).decode()


def decode_token(token: str) -> list | None:
    """The last key of the previous page, or None for the first page."""
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        value = None
    if not isinstance(value, list):
        raise InvalidArgument.from_violations(
            "INVALID_PAGE_TOKEN", [FieldViolation("page_token", "not a token this server issued")]
        )
    return value


def split_page(
    records: Sequence[T], size: int, last_key: Callable[[T], list]
) -> tuple[list[T], str]:
    """The page and the next page's token, from ``size + 1`` records fetched (the extra one
    only says that there is a next page)."""
    page = list(records[:size])
    return page, encode_token(last_key(page[-1])) if len(records) > size else ""
