"""Archive objects back from the offsite copy: download, check every tag, adopt.

The one implementation behind both ways back: a disaster restore (restore.py)
and bringing a recycled study back (services/recycle.py). Each object is received into a
staging folder of the archive (written, fsynced, every GCM tag checked against
its object id: archive/staging.py), then adopted under its own id, so the box
holds byte for byte what the target holds. ``adopt=False`` leaves the checked
objects staged, for a caller that adopts them inside its own index transaction.
"""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from ..archive import Staging, StorageArea
from ..errors import IntegrityError
from . import manifest as mf

MISSING = "missing"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Fetched:
    object_id: str
    size: int = 0  # bytes, sealed, as on the target
    error: str | None = None  # MISSING (not on the target) or why it failed its check; None when fine


def fetch(target, archive: StorageArea, staging: Staging, object_ids: Iterable[str], *, parallel: int = 4,
          adopt: bool = True, thread_name: str = "fetch") -> Iterator[Fetched]:
    """Fetch objects in parallel, yielding one result per object in order.

    Use it inside ``contextlib.closing`` when the loop may stop early: closing waits for the downloads
    under way before the caller goes on (and, say, closes the target)."""

    def one(oid: str) -> Fetched:
        try:
            with target.open(mf.object_name(oid)) as src:
                size = staging.receive(oid, src)
            if adopt:
                archive.adopt(staging, oid)
            return Fetched(oid, size)
        except FileNotFoundError:
            return Fetched(oid, error=MISSING)
        except IntegrityError as exc:
            return Fetched(oid, error=str(exc))

    yield from in_order(one, object_ids, parallel=parallel, thread_name=thread_name)


def in_order(fn: Callable[[T], R], items: Iterable[T], *, parallel: int = 4, thread_name: str = "backup"
             ) -> Iterator[R]:
    """``fn`` over ``items`` in ``parallel`` threads, results in order. Unlike ``Executor.map``, which takes the
    whole iterable at once, it reads ``items`` only a window ahead: a million-object listing is never held."""
    parallel = max(1, parallel)
    items = iter(items)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=thread_name) as pool:
        running: collections.deque = collections.deque()
        try:
            for item in items:
                running.append(pool.submit(fn, item))
                if len(running) >= parallel * 2:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for fut in running:  # stopped early: what has not started never starts
                fut.cancel()
