"""Integrity verification: every archive object against its authentication tags and its index row.

``verify_all`` is what ``pacs-appliance verify`` runs: it decrypts every
indexed object (chunk by chunk, bounded memory), checks each GCM tag and the
plaintext SHA-256 recorded at ingest, and lists what is damaged or missing.
``Sampler`` runs the same check on a random sample in the background, so the
dashboard can say when the disk last proved readable.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..archive import StorageArea
from ..errors import ApplianceError
from ..index import Index, utcnow
from ..lifecycle import PeriodicTask

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (sop_uid, reason)
    missing: list[str] = field(default_factory=list)  # sop_uids whose object is gone
    finished_at: object = None

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.missing


def verify_all(archive: StorageArea, index, sample: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check every indexed object (or a random ``sample`` of them).

    The rows are read in pages (or sampled by the index), never all at once: bounded memory at any size."""
    report = VerifyReport()
    if sample is not None:
        rows = index.objects.sample(sample)
        total = len(rows)
    else:
        total = index.objects.count()
        rows = index.objects.rows()
    for n, row in enumerate(rows, 1):
        try:
            archive.verify(row.object_id, row.sha256)
        except ApplianceError as exc:
            if not archive.exists(row.object_id) and index.recycling.is_recycled(row.object_id):
                continue  # recycled (appliance/services/recycle.py) since the list was read: deleted on purpose
            if not archive.exists(row.object_id):
                report.missing.append(row.label)
            else:
                report.damaged.append((row.label, str(exc)))
            log.error("verify: instance %s: %s", row.label, exc)
        report.checked += 1
        report.bytes += row.size
        if progress:
            progress(n, total)
    report.finished_at = utcnow()
    return report


class Sampler:
    """Background light verification: a random sample every ``interval`` seconds."""

    def __init__(self, archive: StorageArea, index, sample_size: int, interval: float):
        self.archive, self.index = archive, index
        self.sample_size = sample_size
        self.interval = interval
        self.last: VerifyReport | None = None
        # the first pass shortly after start-up, then on the interval
        self._task = PeriodicTask("verify-sampler", self.run_once, interval, first_after=min(60.0, interval),
                                  join_seconds=10)

    def run_once(self) -> VerifyReport:
        self.last = verify_all(self.archive, self.index, sample=self.sample_size)
        if not self.last.ok:
            log.error("background verification found %d damaged and %d missing object(s): run "
                      "`pacs-appliance verify` for the full list", len(self.last.damaged), len(self.last.missing))
        return self.last

    def start(self) -> None:
        self._task.start()

    def stop(self) -> None:
        self._task.stop()


def summarize(report: VerifyReport) -> Iterable[str]:
    yield f"checked {report.checked} object(s), {report.bytes / (1 << 20):.1f} MiB"
    for sop_uid, reason in report.damaged:
        yield f"DAMAGED {sop_uid}: {reason}"
    for sop_uid in report.missing:
        yield f"MISSING {sop_uid}: its archive object is not on the disk"
    yield "all objects intact" if report.ok else (
        f"{len(report.damaged)} damaged, {len(report.missing)} missing: restore them from the offsite backup")


@dataclass
class IndexCheck:
    """The index file's own soundness and its rows against the archive (issue 15)."""

    problems: list[str] = field(default_factory=list)  # SQLite's integrity check, line by line
    remedy: str = ""  # what to do about unindexed objects (the backend's: index rebuild, or the database's backup)
    file_checked: bool = True  # False on PostgreSQL: no index file here (its server keeps the database sound)
    indexed: int = 0  # objects the index names
    archived: int = 0  # objects in the archive
    unindexed: list[str] = field(default_factory=list)  # archive objects no row names
    missing: list[str] = field(default_factory=list)  # rows whose object is gone

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unindexed and not self.missing

    def lines(self) -> list[str]:
        out = [f"index: {self.indexed} object(s) named, archive: {self.archived} object(s)"]
        if self.problems:
            out.append("the index file is DAMAGED (SQLite integrity check): stop the service and run "
                       "`pacs-appliance index rebuild`")
            out += [f"  {p}" for p in self.problems]
        if self.unindexed:
            out.append(f"{len(self.unindexed)} archive object(s) have no index row (if more than a write "
                       f"interrupted at a crash would leave: {self.remedy})")
            out += [f"  {oid}" for oid in self.unindexed[:20]]
        if self.missing:
            out.append(f"{len(self.missing)} indexed object(s) are missing from the archive")
            out += [f"  {m}" for m in self.missing[:20]]
        if self.ok:
            out.append("index intact: " + ("integrity check ok, " if self.file_checked else "")
                       + "rows and archive agree")
        return out


def check_index(index_path, index_key: bytes, archive: StorageArea, open_index: Callable[[], Index], *,
                index_file: bool = True) -> IndexCheck:
    """SQLite's full integrity check, then the index's object ids merged with the archive's (both sorted).
    ``index_file``: False for a PostgreSQL index (there is no file to check; its rows still are).

    ``open_index`` is called only once the file checked sound: opening a damaged file can itself fail
    on the page it reads first, and that must be reported as damage, not as a crash."""
    from ..index import health
    from ..index.reconcile import ReconcileReport, _merge

    result = IndexCheck(problems=health.check(index_path, index_key, full=True) if index_file else [],
                        file_checked=index_file)
    if result.problems:
        return result  # rows read from a damaged file prove nothing
    index = open_index()
    result.remedy = index.db.remedy
    merged = ReconcileReport()
    result.unindexed = _merge(index.objects.named(), iter(archive.list_ids()), merged)
    result.indexed, result.archived = merged.indexed, merged.archived
    result.missing = [f"{'(replaced) ' if m.replaced else ''}{m.sop_uid} (object {m.object_id})"
                      for m in merged.missing]
    return result
