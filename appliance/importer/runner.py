"""Feeding one entry through the one ingest path, and saying what happened in plain words.

Ingest is idempotent for identical objects, so an entry imported twice (a
retried ZIP, an inbox file whose deletion a crash interrupted) is reported as
"already present" and nothing is written or counted twice.
"""
from __future__ import annotations

import enum
import errno
import logging
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field

from ..errors import ConflictRejected, DiskFull, InvalidObject, ReplacementRefused
from ..ingest import Ingestor, Origin
from ..records.instances import Outcome
from .sources import Entry, SourceError

log = logging.getLogger(__name__)


class Status(enum.Enum):
    IMPORTED = "imported"
    REPLACED = "replaced"  # imported; a different object with the same UID was kept aside as replaced
    HELD = "held"  # in the archive, but held for an admin: it names another patient than the stored one
    ALREADY = "already present"
    FAILED = "failed"
    RETRY = "retry later"  # nothing wrong with the input: disk full or a passing error; try again


@dataclass
class EntryResult:
    entry: Entry
    status: Status
    reason: str = ""


def import_entry(ingestor: Ingestor, entry: Entry, origin: Origin) -> EntryResult:
    """Ingest one entry; never raises for bad input, only reports."""
    def result(status: Status, reason: str = "") -> EntryResult:
        return EntryResult(entry, status, reason)

    try:
        stream, size = entry.open()
    except SourceError as exc:
        return result(Status.FAILED, str(exc))
    except FileNotFoundError:
        if entry.sop_uid and ingestor.index.studies.find_instance(entry.sop_uid) is not None:
            return result(Status.ALREADY)
        if entry.sop_uid:
            return result(Status.FAILED, "the DICOMDIR lists this file but it is not on the media")
        return result(Status.FAILED, "the file disappeared before it could be read")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        return result(Status.FAILED, f"unreadable ZIP member: the ZIP is damaged ({exc.__class__.__name__})")
    except IsADirectoryError:
        return result(Status.FAILED, "this is a folder, not a file")
    except PermissionError:
        return result(Status.FAILED, "the file cannot be read: permission denied")
    except OSError as exc:
        return result(Status.RETRY, f"the file could not be read ({exc.strerror or exc.__class__.__name__})")
    try:
        with stream:
            stored = ingestor.store(stream, size, origin)
    except InvalidObject as exc:
        return result(Status.FAILED, str(exc))
    except ReplacementRefused as exc:
        return result(Status.FAILED, str(exc))
    except ConflictRejected:
        return result(Status.FAILED, "duplicate with different content: a different object with the same SOP "
                                     "Instance UID is already stored, and the archive is set to reject such "
                                     "objects ([storage] on_conflict = \"reject\")")
    except DiskFull as exc:
        return result(Status.RETRY, f"disk full: {exc}")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        return result(Status.FAILED, f"unreadable ZIP member: the ZIP is damaged ({exc.__class__.__name__})")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return result(Status.RETRY, "disk full: the archive disk ran out of space")
        log.warning("import of one entry failed: %s", exc.__class__.__name__)
        return result(Status.RETRY, f"could not be stored ({exc.strerror or exc.__class__.__name__})")
    except Exception as exc:  # noqa: BLE001 - an index failure etc.: report, keep the input, try again
        log.exception("import of one entry failed")
        return result(Status.RETRY, f"could not be stored ({exc})")
    if stored.outcome is Outcome.DUPLICATE:
        return result(Status.ALREADY)
    if stored.outcome is Outcome.HELD:
        return result(Status.HELD, "an object with the same SOP Instance UID naming another patient is stored: "
                                   "this one is held for an admin to accept or discard")
    if stored.outcome is Outcome.REPLACED:
        return result(Status.REPLACED, "duplicate with different content: it replaced the object stored earlier "
                                       "under the same SOP Instance UID (the earlier one is kept as replaced)")
    return result(Status.IMPORTED)


@dataclass
class Tally:
    """Counts for a summary and the audit log."""

    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (label, reason)

    def add(self, r: EntryResult) -> None:
        self.counts[r.status] += 1
        if r.status in (Status.FAILED, Status.RETRY):
            self.failures.append((r.entry.label, r.reason))

    def add_failure(self, label: str, reason: str) -> None:
        self.counts[Status.FAILED] += 1
        self.failures.append((label, reason))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.counts[Status.FAILED] + self.counts[Status.RETRY]

    def describe(self) -> str:
        c = self.counts
        parts = [f"{c[Status.IMPORTED] + c[Status.REPLACED]} imported"]
        if c[Status.REPLACED]:
            parts[0] += f" ({c[Status.REPLACED]} replacing a different object with the same UID)"
        if c[Status.HELD]:
            parts.append(f"{c[Status.HELD]} held for an admin (another patient under a stored UID)")
        parts.append(f"{c[Status.ALREADY]} already present")
        parts.append(f"{self.failed} failed")
        return ", ".join(parts)
