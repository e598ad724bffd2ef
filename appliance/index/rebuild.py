"""Rebuilding the index from the archive alone, and refusing to start without one (issue 15).

The archive holds every DICOM object; the sealed index snapshots beside them
(archive/snapshots.py) hold what the objects do not: users, peers, the worklist,
the audit chain, backup and recycling state, settings. A rebuild:

1. starts from the newest snapshot that decrypts and passes SQLite's integrity
   check (or from an empty index when there is none), migrated to the current schema;
2. drops rows whose object is no longer in the archive (deleted after the snapshot);
3. records every archive object the snapshot does not name, in the order the objects
   were written, through the one ingest recording code (index/records.py): a later
   object with the same SOP Instance UID replaces an earlier one, which is kept as a
   replaced version, exactly as at ingest. Decrypting and parsing run in worker
   processes (one per core); this process records rows in large transactions;
4. records the rebuild in the audit log (the snapshot's chain continues, so it verifies);
5. checks the new file and swaps it in with a rename. A damaged old index is kept
   beside it as ``index.db.damaged-<time>``.

The new index is built in ``index.db.rebuild`` and its progress is the index itself
(an object it names is done), so a rebuild killed at any point resumes where it stopped.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import health, rebuilding, unfinished_batches as batches
from ..archive import Archive, Keyring
from ..archive.fsutil import fsync_dir, try_lock, write_file_atomic
from ..errors import ApplianceError, IntegrityError
from . import Index, utcnow

log = logging.getLogger(__name__)
BATCH = 500  # objects recorded per transaction
SOURCE = "rebuild"
WORK_SUFFIX = ".rebuild"


class IndexNeedsRebuild(ApplianceError):
    """The index is missing, unreadable or damaged while the archive holds objects."""

    exit_code = 7  # the index needs a rebuild: systemd does not restart on it (RestartPreventExitStatus)


class RebuildBusy(ApplianceError):
    exit_code = 7  # still an index that needs its rebuild finished


@dataclass
class RebuildReport:
    snapshot: str | None = None  # the generation started from
    resumed: bool = False
    total: int = 0  # archive objects
    from_snapshot: int = 0  # objects the snapshot already named
    recorded: dict[str, int] = field(default_factory=dict)  # outcome -> count, for objects added
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (object id, reason)
    dropped: int = 0  # snapshot rows whose object is gone
    set_aside: int = 0  # objects of a correction that never finished: with the orphans, not indexed
    seconds: float = 0.0
    kept_old: str | None = None  # where the damaged index was put

    @property
    def added(self) -> int:
        return sum(self.recorded.values())

    def lines(self) -> list[str]:
        start = f"snapshot {self.snapshot}" if self.snapshot else "no snapshot (users, peers, worklist and " \
                                                                   "settings start empty)"
        out = [f"index rebuilt from {start}{' (resumed)' if self.resumed else ''}: {self.total} archive "
               f"object(s), {self.from_snapshot} named by the snapshot, {self.added} recorded "
               f"({', '.join(f'{n} {k}' for k, n in sorted(self.recorded.items())) or 'none'}) in "
               f"{self.seconds:.0f} s"]
        if self.dropped:
            out.append(f"{self.dropped} row(s) of the snapshot named objects no longer in the archive "
                       "(deleted after it was taken): dropped")
        if self.set_aside:
            out.append(f"{self.set_aside} object(s) of a correction interrupted before it finished were not "
                       "indexed (moved to archive/orphans/)")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} archive object(s) could not be read and are not indexed:")
            out += [f"  {oid}: {why}" for oid, why in self.unreadable[:50]]
        if self.kept_old:
            out.append(f"the old index was kept as {self.kept_old}")
        return out


# --- worker processes: decrypt and parse ---------------------------------------------------------------
# Per-process state of a pool worker (set once by its initializer; a worker does nothing else).
_worker_archive: Archive | None = None


def _init_worker(archive_dir: str, keyring: Keyring, chunk_size: int) -> None:
    global _worker_archive
    _worker_archive = Archive(Path(archive_dir), keyring, chunk_size)


def _read_object(object_id: str):
    """(object id, attributes or None, size, sha256, error)."""
    from ..ingest.dicomfile import parse

    try:
        data = _worker_archive.read(object_id)
        parsed = parse(io.BytesIO(data), len(data))
        return object_id, parsed.attributes, len(data), hashlib.sha256(data).hexdigest(), ""
    except ApplianceError as exc:
        return object_id, None, 0, "", str(exc)


# --- the rebuild --------------------------------------------------------------------------------------
def work_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + WORK_SUFFIX)


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal")]


def _remove(path: Path) -> None:
    for p in [path, *_sidecars(path)]:
        p.unlink(missing_ok=True)


def _start_from_snapshot(archive: Archive, index_key: bytes, work: Path) -> str | None:
    """Decrypt the newest sound snapshot into ``work``; None (and no file) when there is none."""
    for snap in archive.snapshots.list():
        try:
            archive.snapshots.open_to(snap.name, work)
        except (IntegrityError, OSError, ApplianceError) as exc:
            log.warning("index snapshot %s cannot be used: %s", snap.name, exc)
            _remove(work)
            continue
        problems = health.check(work, index_key, full=True)
        if not problems:
            return snap.name
        log.warning("index snapshot %s fails SQLite's integrity check (%s); trying an older one",
                    snap.name, "; ".join(problems[:3]))
        _remove(work)
    return None


def _snapshot_sound_index(index_path: Path, index_key: bytes, archive: Archive, keep: int) -> None:
    """A rebuild asked for over a sound index starts from a snapshot of it, so nothing made since the last
    periodic snapshot (a user, a peer) is thrown away. Its unfinished write batches are discarded first
    (nothing writes meanwhile: the data directory is held), so the snapshot names none."""
    from ..services.snapshots import take

    log.info("the index passes SQLite's integrity check: taking a snapshot of it to rebuild from")
    index = Index.open(index_path, index_key)
    try:
        batches.discard(archive, index.db)
        take(index.db, index_key, archive, index_path.parent, keep)
    finally:
        index.close()


def rebuild(index_path: Path, archive: Archive, keyring: Keyring, archive_dir: Path, *, workers: int | None = None,
            progress: Callable[[int, int], None] | None = None, actor: str = "cli",
            snapshot_keep: int = 3) -> RebuildReport:
    """Rebuild the index at ``index_path`` from ``archive``; see the module's docstring."""
    started = time.monotonic()
    report = RebuildReport()
    lock = try_lock(index_path.with_name(index_path.name + ".rebuild-lock"))
    if lock is None:
        raise RebuildBusy("another index rebuild is running on this data directory")
    try:
        with batches.none_in_flight(index_path.parent / batches.LOCK_NAME) as idle:
            if not idle:
                raise RebuildBusy("a correction is being written to this data directory (`pacs-appliance correct` "
                                  "or the web app): let it finish, stop the service, then rebuild")
            _rebuild(index_path, archive, keyring, archive_dir, report, workers, progress, actor, snapshot_keep)
    finally:
        os.close(lock)
    report.seconds = time.monotonic() - started
    for line in report.lines():
        log.warning("index rebuild: %s", line)
    return report


def _rebuild(index_path: Path, archive: Archive, keyring: Keyring, archive_dir: Path, report: RebuildReport,
             workers, progress, actor: str, snapshot_keep: int) -> None:
    work = work_path(index_path)
    state_path = work.with_name(work.name + ".json")
    if work.exists() and state_path.exists():
        report.snapshot = json.loads(state_path.read_text())["snapshot"]
        report.resumed = True
        log.info("resuming the index rebuild in %s", work)
    else:
        _remove(work)
        if index_path.exists() and not health.check(index_path, keyring.index_key, full=True):
            _snapshot_sound_index(index_path, keyring.index_key, archive, snapshot_keep)
        report.snapshot = _start_from_snapshot(archive, keyring.index_key, work)
        write_file_atomic(state_path, json.dumps({"snapshot": report.snapshot,
                                                  "started": utcnow().isoformat()}).encode())
    index = Index.open(work, keyring.index_key)  # migrates an older snapshot to the current schema
    try:
        _fill(index, archive, keyring, archive_dir, report, workers, progress)
        from ..records.audit import AuditLog  # the rebuild continues the snapshot's chain

        AuditLog(index).record("index.rebuild", actor, detail="; ".join(report.lines())[:2000])
        rebuilding.checkpoint(index.db)
    finally:
        index.close()
    problems = health.check(work, keyring.index_key, full=True)
    if problems:
        raise IntegrityError("the rebuilt index fails SQLite's integrity check: " + "; ".join(problems))
    report.kept_old = _swap(index_path, work)
    state_path.unlink(missing_ok=True)
    fsync_dir(index_path.parent)


def _fill(index: Index, archive: Archive, keyring: Keyring, archive_dir: Path, report: RebuildReport,
          workers: int | None, progress: Callable[[int, int], None] | None) -> None:
    present = list(archive.list_ids())
    report.total = len(present)
    present_set = set(present)
    with index.db.atomic("IMMEDIATE"):
        report.dropped = len(rebuilding.drop_missing(index.db, present_set))
        report.set_aside = sum(d.objects for d in batches.settle_for_rebuild(archive, index.db, present_set))
    if report.set_aside:
        present = [o for o in present if o in present_set]
        report.total = len(present)
    named = rebuilding.named_ids(index.db)
    report.from_snapshot = len(named & present_set)
    # Arrival order decides which version of a SOP Instance UID is current (the id breaks ties).
    todo = sorted((o for o in present if o not in named), key=lambda o: (archive.written_at(o), o))
    done = report.total - len(todo)
    if progress:
        progress(done, report.total)
    if not todo:
        return
    only_archive_keys = Keyring(dict(keyring.archive_keys), keyring.current_archive_key, b"")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding SQLite connections
    with ctx.Pool(workers or os.cpu_count() or 1, initializer=_init_worker,
                  initargs=(str(archive_dir), only_archive_keys, archive.chunk_size)) as pool:
        for batch in _batches(pool.imap(_read_object, todo, chunksize=16), BATCH):
            items = []
            for object_id, attributes, size, sha256, error in batch:
                if attributes is None:
                    report.unreadable.append((object_id, error))
                    log.error("index rebuild: archive object %s cannot be indexed: %s", object_id, error)
                else:
                    items.append((attributes, object_id, size, sha256))
            with index.db.atomic("IMMEDIATE"):
                counts = rebuilding.record_all(index.db, items, SOURCE)
            for k, n in counts.items():
                report.recorded[k] = report.recorded.get(k, 0) + n
            done += len(batch)
            if progress:
                progress(done, report.total)


def _batches(results: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in results:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _swap(index_path: Path, work: Path) -> str | None:
    """Put the rebuilt index in place; keep a damaged old one aside. A crash here leaves the work file and
    its state, so running the rebuild again finishes the swap."""
    kept = None
    if index_path.exists():
        stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
        aside = index_path.with_name(f"{index_path.name}.damaged-{stamp}")
        for src, dst in zip([index_path, *_sidecars(index_path)], [aside, *_sidecars(aside)]):
            if src.exists():
                os.rename(src, dst)
        kept = str(aside)
    else:
        for stale in _sidecars(index_path):  # a -wal without its database would be applied to the new one
            stale.unlink(missing_ok=True)
    for stale in _sidecars(work):
        stale.unlink(missing_ok=True)
    os.rename(work, index_path)
    fsync_dir(index_path.parent)
    return kept


# --- at start ---------------------------------------------------------------------------------------
def what_is_wrong(index_path: Path, archive: Archive, index_key: bytes, quick_check: bool) -> list[str]:
    """Why the index cannot be used as it is (empty: it can). Only asked when the archive holds objects:
    a box without objects may create a new index."""
    if not archive.has_objects():
        return []
    if not index_path.exists():
        return [f"the index {index_path} is missing, but the archive holds objects"]
    if work_path(index_path).with_name(work_path(index_path).name + ".json").exists():
        return ["an index rebuild was interrupted before it finished"]
    if quick_check:
        return health.check(index_path, index_key)
    return []


def ensure_index(index_path: Path, archive: Archive, keyring: Keyring, archive_dir: Path, *, quick_check: bool,
                 auto_rebuild: bool, snapshot_keep: int = 3) -> RebuildReport | None:
    """Refuse (IndexNeedsRebuild) or, with ``auto_rebuild``, rebuild when the index is lost or damaged."""
    problems = what_is_wrong(index_path, archive, keyring.index_key, quick_check)
    if not problems:
        return None
    if auto_rebuild:
        log.warning("the index cannot be used (%s): rebuilding it from the archive ([index] auto_rebuild = true)",
                    "; ".join(problems))
        return rebuild(index_path, archive, keyring, archive_dir, actor="system", snapshot_keep=snapshot_keep)
    data_dir = index_path.parent
    raise IndexNeedsRebuild(
        "; ".join(problems) + ". Nothing was changed. Stop the service and run `pacs-appliance index rebuild "
        f"--data {data_dir}` (it rebuilds the index from the archive and its latest index snapshot), or set "
        "[index] auto_rebuild = true to rebuild at start")
