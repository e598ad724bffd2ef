"""Two id streams, each sorted and without repeats, walked side by side in bounded memory.

The one merge behind every whole-archive comparison: start-up reconciliation (index against archive,
appliance/index/reconcile.py) and each backup run (snapshot against what is offsite and the target's listing,
appliance/backup/sync.py). Neither side is ever held whole: a million ids cost nothing but the walk.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

L = TypeVar("L")
R = TypeVar("R")
_END = object()


def _same(item):
    return item


def align(left: Iterable[L], right: Iterable[R], left_key: Callable[[L], str] = _same,
          right_key: Callable[[R], str] = _same) -> Iterator[tuple[L | None, R | None]]:
    """Yield ``(l, r)`` in key order: both where the key is on both sides, ``(l, None)`` or ``(None, r)`` where
    it is on one. Each side must come sorted by its key with no key twice; each is read one item ahead only."""
    right = iter(right)
    r = next(right, _END)
    for item in left:
        key = left_key(item)
        while r is not _END and right_key(r) < key:
            yield None, r
            r = next(right, _END)
        if r is not _END and right_key(r) == key:
            yield item, r
            r = next(right, _END)
        else:
            yield item, None
    while r is not _END:
        yield None, r
        r = next(right, _END)
