"""Check an offsite copy: everything the newest manifest names is there, and (optionally) opens.

Presence and size are checked for every object with one listing of the target;
``sample`` objects picked at random (or all, with ``full``) are downloaded and
decrypted, which checks every GCM tag and so detects any changed byte. Problems
are reported by offsite name (opaque object ids, never patient data).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable

from ..archive import envelope
from ..archive.keys import Keyring, unseal_keyring
from ..errors import IntegrityError, KeyStoreError
from ..sortedmerge import align
from . import manifest as mf
from .fetch import in_order


@dataclass
class VerifyReport:
    manifest: str = ""
    objects: int = 0  # objects the manifest lists
    present: int = 0
    decrypted: int = 0
    missing: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged


def check_blob(target, name: str, size: int, open_fn) -> str | None:
    """Download ``name`` and run ``open_fn(fh, size)`` over it; return why it is bad, or None."""
    try:
        with target.open(name) as fh:
            for _chunk in open_fn(fh, size):
                pass
    except FileNotFoundError:
        return "missing"
    except IntegrityError as exc:
        return str(exc)
    return None


def open_object(keyring: Keyring, object_id: str):
    return lambda fh, size: envelope.open_chunks(fh, size, bytes.fromhex(object_id), keyring.archive_key,
                                                 f"offsite object {object_id}")


def verify(target, keyring: Keyring, recovery_key: bytes | None = None, sample: int = 0, full: bool = False,
           parallel: int = 4, progress: Callable[[str], None] | None = None) -> VerifyReport:
    progress = progress or (lambda _m: None)
    report = VerifyReport()
    man = mf.latest_manifest(target, keyring, on_skip=lambda name, exc: report.damaged.append((name, str(exc))))
    report.manifest, report.objects = man.name, man.count
    progress(f"checking {man.name}: {man.count} objects")

    # The manifest and the target's listing, both in id order, merged side by side: neither is held whole.
    chosen: list[tuple[str, int]] = []  # a uniform sample of the healthy objects (reservoir sampling)
    seen = 0
    for listed, on_target in align(man.objects(), mf.object_listing(target), left_key=itemgetter(0),
                                   right_key=itemgetter(0)):
        if listed is None:
            continue  # on the target only (an object retention keeps, or not yet in a manifest)
        name = mf.object_name(listed[0])
        if on_target is None:
            report.missing.append(name)
        elif on_target[1] != listed[1]:
            report.damaged.append((name, f"size {on_target[1]} bytes offsite, {listed[1]} expected"))
        else:
            report.present += 1
            if not full and sample:
                seen += 1
                if len(chosen) < sample:
                    chosen.append(listed)
                elif (k := random.randrange(seen)) < sample:
                    chosen[k] = listed

    for name, size in ((man.snapshot, man.snapshot_size), (mf.KEYRING_NAME, man.keyring_size)):
        got = target.size(name)
        if got is None:
            report.missing.append(name)
        elif got != size and name != mf.KEYRING_NAME:  # the keyring is rewritten when keys rotate
            report.damaged.append((name, f"size {got} bytes offsite, {size} expected"))
    if recovery_key is not None and target.size(mf.KEYRING_NAME) is not None:
        with target.open(mf.KEYRING_NAME) as fh:
            try:
                unseal_keyring(fh.read(), recovery_key)
            except KeyStoreError as exc:
                report.damaged.append((mf.KEYRING_NAME, str(exc)))

    bad = set(report.missing) | {name for name, _ in report.damaged}  # only what failed: few, or the copy is lost
    if full:  # every healthy object: the manifest read once more, never held
        chosen = (item for item in man.objects() if mf.object_name(item[0]) not in bad)
        progress(f"decrypting {report.present} objects")
    elif chosen:
        progress(f"decrypting {len(chosen)} objects")
    if chosen or full:
        n = mf.MANIFEST_NAME.match(man.name).group(2)
        why = check_blob(target, man.snapshot, man.snapshot_size,
                         lambda fh, size: mf.open_blob(fh, size, n, keyring, man.snapshot))
        if why and why != "missing":
            report.damaged.append((man.snapshot, why))
        check = lambda item: (item[0], check_blob(target, mf.object_name(item[0]), item[1],  # noqa: E731
                                                  open_object(keyring, item[0])))
        for oid, why in in_order(check, chosen, parallel=parallel, thread_name="verify"):
            if why == "missing":
                report.missing.append(mf.object_name(oid))
            elif why:
                report.damaged.append((mf.object_name(oid), why))
            else:
                report.decrypted += 1
    return report
