"""Cheap copies of pynetdicom's negotiation objects (presentation contexts, user information items).

The box shares decoded requests (request_cache.py) and gives each association its own copy of the
request's contexts and items, which negotiation and the box's handlers change; ``copy.copy`` and
``deepcopy`` go through ``__reduce_ex__`` for each of the hundreds of objects, ~1 ms per association. These objects keep their
state in ``__dict__`` and hold immutable values (UIDs, strings, numbers, booleans) besides a list or two
(a context's transfer syntaxes): a new object with the same values and its own lists is an isolated copy.
"""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def fresh_copy(item: T) -> T:
    """A copy of ``item`` sharing nothing a user may change (see above)."""
    new = object.__new__(type(item))
    state = dict(item.__dict__)
    for name, value in state.items():
        if type(value) in (list, dict):
            state[name] = value.copy()
    new.__dict__.update(state)
    return new
