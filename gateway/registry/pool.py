"""Sharing equal values while a registry is read (pure)."""

from __future__ import annotations

from datetime import date
from typing import TypeVar, cast

__all__ = ["Pool"]

V = TypeVar("V", str, date, int, None)


class Pool:
    """Equal values read become one object. A CSV reader or SQLite hands out a new object per
    field: with 100,000 devices a site id (in three tables), a detector id (its row and its
    valve's links), a model name, an install date and an interval would each exist tens of
    thousands of times over. Strings, dates and ints only: a dict takes 1 and 1.0 for one key."""

    def __init__(self) -> None:
        self._seen: dict[object, object] = {}

    def __call__(self, value: V) -> V:
        return cast(V, self._seen.setdefault(value, value))
