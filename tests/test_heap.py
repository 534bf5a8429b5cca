"""The gateway process's collector settings (gateway/heap.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_settle_freezes_what_lives_and_collects_the_young_less_often() -> None:
    long_lived = [{"device": n} for n in range(1000)]  # a registry, say
    cycle = _Node()
    cycle.next = cycle  # garbage only the collector frees: freed first, not frozen forever
    gone = weakref.ref(cycle)
    del cycle
    heap.settle()
    assert gone() is None
    assert gc.get_freeze_count() >= len(long_lived)
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD


class _Node:
    next: _Node | None = None
