"""Archive objects back from the offsite copy: download, check every tag, adopt.

The one implementation behind both ways back: a disaster restore (restore.py)
and bringing a recycled study back (services/recycle.py). Each object is received into a
staging folder of the archive (written, fsynced, every GCM tag checked against
its object id: archive/staging.py), then adopted under its own id, so the box
holds byte for byte what the target holds. ``adopt=False`` leaves the checked
objects staged, for a caller that adopts them inside its own index transaction.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..archive import Staging, StorageArea
from ..errors import IntegrityError
from . import manifest as mf

MISSING = "missing"


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

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix=thread_name) as pool:
        yield from pool.map(one, object_ids)
