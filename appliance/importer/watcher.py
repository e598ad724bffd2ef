"""The watched inbox: files dropped into <data>/inbox are imported, then removed.

How a file gets in, and why it is safe:
- A scan walks the inbox when watchdog reports a change, and at least every
  ``poll_seconds`` (network shares often report nothing). A file is taken only
  when its size, mtime and ctime have not changed for ``stable_seconds`` of our
  own observation (no trust in a remote clock) and, where Linux can tell
  cheaply (a read lease is refused while anyone has the file open for
  writing), nobody is still writing it.
- Each entry goes through the one ingest path. Only after ``store`` returned
  (bytes fsynced, index committed) is the file deleted, or moved to
  processed/. A crash in between leaves the file in the inbox; at the next
  start it is imported again, which ingest recognises as already present, so
  nothing is lost and nothing is counted twice. A ZIP is removed only after
  every member is in, so a half-imported ZIP is simply retried.
- A file that cannot be imported is sealed into the archive's encrypted
  quarantine (archive/quarantine.py) with its path in the inbox and the reason
  in plain words, then removed: no plaintext stays behind. A ZIP with a bad
  member goes there whole (its good members are already in). Admins list,
  retry, export and delete them with `pacs-appliance import failed ...` or the
  admin page (importer/failed.py). Plaintext files an older version left in
  failed/ (with their .reason.txt) are sealed the same way at start-up.
- Disk full leaves files where they are and pauses the inbox for
  ``retry_seconds``; other passing errors are retried a few times, then failed.
- A folder holding a DICOMDIR is read through the DICOMDIR once the DICOMDIR
  and every file in that folder are stable. Files it does not list are failed
  (a CD's viewer software, say) - except when the DICOMDIR lies at the
  top of the inbox, where it cannot speak for everything else dropped there.
- Folders emptied by the import are removed.
Logs give counts, never file names (a folder may be named after a patient).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..archive.fsutil import PRIVATE_FILE, private_dir
from ..archive.quarantine import Quarantine
from ..ingest import Ingestor, Origin
from ..lifecycle import PeriodicTask
from .runner import EntryResult, Status, Tally, import_entry
from .sources import (Source, SourceError, file_entry, is_dicomdir_name, is_ignored, read_dicomdir,
                      source_for_file)

log = logging.getLogger(__name__)
FAILED_DIR = "failed"
PROCESSED_DIR = "processed"
REASON_SUFFIX = ".reason.txt"
MAX_ATTEMPTS = 3  # passing errors (not disk full) before a file is given up as failed
UNLISTED_REASON = ("not listed in the DICOMDIR of the media it came with, so it was not imported "
                   "(for example viewer software or autorun files from a CD)")


@dataclass(frozen=True)
class InboxSettings:
    inbox: Path
    after_import: str = "delete"  # or "move" (to processed/)
    stable_seconds: float = 2.0
    poll_seconds: float = 10.0
    retry_seconds: float = 60.0
    member_max_bytes: int = 4 << 30
    workers: int = 2

    @classmethod
    def from_config(cls, config) -> "InboxSettings":
        s = config.inbox
        if s.after_import not in ("delete", "move"):
            from ..errors import ConfigError

            raise ConfigError(f"[inbox] after_import must be \"delete\" or \"move\", not {s.after_import!r}")
        return cls(inbox=config.inbox_dir, after_import=s.after_import, stable_seconds=float(s.stable_seconds),
                   poll_seconds=float(s.poll_seconds), retry_seconds=float(s.retry_seconds),
                   member_max_bytes=int(s.zip_member_max_mb) << 20, workers=max(1, int(s.workers)))


def still_being_written(path: Path) -> bool:
    """True if some process has ``path`` open for writing, as far as Linux can tell cheaply.

    A read lease is refused (EAGAIN) while the file is open for writing anywhere.
    Where leases are unavailable (a file we do not own, a network file system)
    we cannot tell, and rely on the stability time alone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EBUSY)
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


class Inbox:
    """The inbox service: ``start`` / ``stop`` for Appliance.services; ``scan`` runs one pass."""

    name = "inbox"

    def __init__(self, settings: InboxSettings, ingestor: Ingestor, audit, quarantine: Quarantine | None = None):
        self.s = settings
        self.quarantine = quarantine if quarantine is not None else ingestor.archive.quarantine()
        self.inbox = Path(settings.inbox)
        self.failed_dir = self.inbox / FAILED_DIR
        self.processed_dir = self.inbox / PROCESSED_DIR
        self.ingestor = ingestor
        self.audit = audit
        self.origin = Origin("import", "inbox")
        self._seen: dict[Path, tuple[tuple, float]] = {}  # path -> (signature, monotonic time first seen)
        self._attempts: dict[Path, int] = {}
        self._hold_until = 0.0  # after disk full: no imports until then
        self._next_wait = settings.poll_seconds
        self._task = PeriodicTask("inbox", self._round, lambda: max(0.05, min(self._next_wait, settings.poll_seconds)),
                                  retry_seconds=settings.poll_seconds, join_seconds=60)
        self._observer = None
        self._pool: ThreadPoolExecutor | None = None

    # -- service ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.inbox.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.seal_legacy_failed()
        self._pool = ThreadPoolExecutor(self.s.workers, thread_name_prefix="inbox-import")
        self._start_observer()
        self._task.start()

    def stop(self) -> None:
        self._task.stop()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        inbox = self
        skip = (str(self.failed_dir), str(self.processed_dir))

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event):
                # Reads (ours included: a scan opens files) must not wake the scan, or it would spin.
                if event.event_type in ("opened", "closed_no_write") or str(event.src_path).startswith(skip):
                    return
                inbox._task.wake()

        try:
            observer = Observer()
            observer.schedule(Wake(), str(self.inbox), recursive=True)
            observer.start()
            self._observer = observer
        except Exception as exc:  # noqa: BLE001 - e.g. the inotify watch limit; polling still works
            log.warning("inbox: change notifications unavailable (%s); scanning every %.0f s instead",
                        exc, self.s.poll_seconds)

    def _round(self) -> None:
        self._next_wait = self.scan()

    # -- one pass ---------------------------------------------------------------------------------
    def scan(self) -> float:
        """Import whatever is ready; return seconds until something pending may become ready."""
        now = time.monotonic()
        if now < self._hold_until:
            return self._hold_until - now
        files = self._walk()
        self._observe(files, now)
        units, wait = self._plan(files, now)
        if not units:
            return wait
        tally = Tally()
        pool = self._pool or ThreadPoolExecutor(1)
        try:
            for unit_tally in pool.map(self._run_unit, units):
                for status, n in unit_tally.counts.items():
                    tally.counts[status] += n
                tally.failures.extend(unit_tally.failures)
        finally:
            if pool is not self._pool:
                pool.shutdown()
        if tally.total:
            self._report(tally)
        return 0.05 if not self._task.stopping and time.monotonic() >= self._hold_until else wait

    def _walk(self) -> dict[Path, tuple]:
        files: dict[Path, tuple] = {}
        for dirpath, dirs, names in os.walk(self.inbox):
            here = Path(dirpath)
            if here == self.inbox:
                dirs[:] = [d for d in dirs if d not in (FAILED_DIR, PROCESSED_DIR)]
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if is_ignored(name):
                    continue
                path = here / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if path.is_symlink():  # never read what a link points to (/etc/passwd, another share)
                    self._fail(path, "it is a symbolic link: the inbox imports only files placed in it, never "
                                     "what a link points to", prune=False)
                    continue
                if not path.is_file():
                    continue
                files[path] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return files

    def _observe(self, files: dict[Path, tuple], now: float) -> None:
        for path, sig in files.items():
            old = self._seen.get(path)
            if old is None or old[0] != sig:
                self._seen[path] = (sig, now)
        for path in [p for p in self._seen if p not in files]:
            del self._seen[path]
            self._attempts.pop(path, None)

    def _stable_in(self, path: Path, now: float) -> float:
        """Seconds until ``path`` counts as stable (0 = now)."""
        _sig, since = self._seen[path]
        return max(0.0, since + self.s.stable_seconds - now)

    def _plan(self, files: dict[Path, tuple], now: float) -> tuple[list, float]:
        """Group ready files into units of work: ("media", dicomdir, records, unlisted) or ("file", path)."""
        wait = self.s.poll_seconds
        units: list = []
        governed: set[Path] = set()
        dicomdirs = sorted(p for p in files if is_dicomdir_name(p.name))
        roots = {d.parent for d in dicomdirs}

        def owner(path: Path) -> Path | None:
            """The folder of the innermost DICOMDIR above ``path``: a nested one speaks for its own tree."""
            return next((parent for parent in path.parents if parent in roots), None)

        for dicomdir in dicomdirs:
            root = dicomdir.parent
            tree = [p for p in files if p != dicomdir and owner(p) == root]
            at_top = root == self.inbox
            if self._stable_in(dicomdir, now) > 0:
                wait = min(wait, self._stable_in(dicomdir, now))
                if not at_top:
                    governed.update(tree)  # wait for the DICOMDIR before guessing at its files
                governed.add(dicomdir)
                continue
            try:
                records = read_dicomdir(dicomdir)
            except SourceError:
                continue  # handled as a loose file below: it fails with the reason
            records = [r for r in records if owner(r.path) == root]  # a nested DICOMDIR's files are its own
            listed = {r.path for r in records}
            members = [p for p in tree if p in listed or not at_top]
            governed.add(dicomdir)
            governed.update(members)
            pending = [self._stable_in(p, now) for p in members if self._stable_in(p, now) > 0]
            if pending:
                wait = min(wait, max(pending))
                continue
            # Listed files not here yet may still be on their way (a copy in progress): give them a while.
            grace = self._seen[dicomdir][1] + 10 * self.s.stable_seconds - now
            studies = self.ingestor.index.studies
            if grace > 0 and any(r.path not in files and not (r.sop_uid and studies.find_instance(r.sop_uid))
                                 for r in records):
                wait = min(wait, grace)
                continue
            unlisted = [p for p in members if p not in listed]
            units.append(("media", dicomdir, records, unlisted))
        for path in sorted(files):
            if path in governed:
                continue
            left = self._stable_in(path, now)
            if left > 0:
                wait = min(wait, left)
                continue
            units.append(("file", path))
        return units, wait

    # -- doing the work ---------------------------------------------------------------------------
    def _run_unit(self, unit) -> Tally:
        tally = Tally()
        if self._task.stopping or time.monotonic() < self._hold_until:
            return tally
        try:
            if unit[0] == "media":
                self._import_media(unit[1], unit[2], unit[3], tally)
            else:
                self._import_file(unit[1], tally)
        except Exception:  # noqa: BLE001 - one bad unit must not stop the others
            log.exception("inbox: importing one item failed unexpectedly; it stays in the inbox")
        return tally

    def _import_file(self, path: Path, tally: Tally) -> None:
        if still_being_written(path):
            self._seen.pop(path, None)  # observe it afresh once the writer is done
            return
        source = source_for_file(path, self.s.member_max_bytes, label=self._rel(path))
        try:
            if source.error:
                tally.add_failure(self._rel(path), source.error)
                self._fail(path, source.error)
                return
            results = self._ingest_all(source, tally)
        finally:
            source.close()
        if results is None:
            return
        failures = [r for r in results if r.status is Status.FAILED]
        retry = [r for r in results if r.status is Status.RETRY]
        if retry and not self._give_up(path):
            return  # imported members stay imported; the rest is retried with the whole file
        problems = failures + retry
        if not problems:
            self._done(path)
        elif source.kind == "zip":
            lines = [f"{r.entry.label.split(': ', 1)[-1]}: {r.reason}" for r in problems[:100]]
            more = f"\n... and {len(problems) - 100} more" if len(problems) > 100 else ""
            self._fail(path, f"{len(problems)} of {len(results)} files in this ZIP could not be imported; "
                             f"the other {len(results) - len(problems)} were imported.\n" + "\n".join(lines) + more)
        else:
            self._fail(path, problems[0].reason)

    def _import_media(self, dicomdir: Path, records, unlisted: list[Path], tally: Tally) -> None:
        missing = []
        for rec in records:
            if self._task.stopping or time.monotonic() < self._hold_until:
                return
            if rec.path.exists() and still_being_written(rec.path):
                return
            entry = file_entry(rec.path, self._rel(rec.path), rec.sop_uid)
            result = self._ingest_one(entry, tally)
            if result is None:
                return  # disk full: the media is retried later; what is in stays in
            if result.status is Status.RETRY:
                if not self._give_up(dicomdir):
                    return
                result = EntryResult(entry, Status.FAILED, result.reason)
            if result.status is Status.FAILED:
                if rec.path.exists():
                    self._fail(rec.path, result.reason)
                else:
                    missing.append(self._rel(rec.path))
            else:
                self._done(rec.path, prune=False)
        for path in unlisted:
            tally.add_failure(self._rel(path), UNLISTED_REASON)
            self._fail(path, UNLISTED_REASON, prune=False)
        if missing:
            self._fail(dicomdir, f"{len(missing)} file(s) listed in this DICOMDIR were not on the media:\n"
                                 + "\n".join(missing[:100]))
        else:
            self._done(dicomdir)
        for rec in records:
            self._prune(rec.path.parent)
        for path in unlisted:
            self._prune(path.parent)

    def _ingest_all(self, source: Source, tally: Tally) -> list[EntryResult] | None:
        results = []
        for entry in source.entries:
            if self._task.stopping:
                return None
            result = self._ingest_one(entry, tally)
            if result is None:
                return None
            results.append(result)
        return results

    def _ingest_one(self, entry, tally: Tally) -> EntryResult | None:
        result = import_entry(self.ingestor, entry, self.origin)
        if result.status is Status.RETRY and result.reason.startswith("disk full"):
            self._hold_until = time.monotonic() + self.s.retry_seconds
            log.warning("inbox: %s; files stay in the inbox and are retried in %.0f s", result.reason,
                        self.s.retry_seconds)
            return None
        tally.add(result)
        return result

    def _give_up(self, path: Path) -> bool:
        n = self._attempts.get(path, 0) + 1
        self._attempts[path] = n
        if n < MAX_ATTEMPTS:
            self._seen.pop(path, None)  # wait a stability period before the next try
            return False
        return True

    # -- where files go afterwards ----------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.inbox))
        except ValueError:
            return str(path)

    def _done(self, path: Path, prune: bool = True) -> None:
        """The content is durably stored: remove the file from the inbox (or move it to processed/)."""
        if self.s.after_import == "move":
            dest = _free_name(self.processed_dir / path.relative_to(self.inbox))
            private_dir(dest.parent)
            os.rename(path, dest)
            _private_now(dest)
        else:
            path.unlink(missing_ok=True)
        self._seen.pop(path, None)
        if prune:
            self._prune(path.parent)

    def _fail(self, path: Path, reason: str, prune: bool = True) -> None:
        """Seal ``path`` into the quarantine with its reason, then remove it from the inbox."""
        if not self._seal(path, self._rel(path), reason):
            return  # stays in the inbox; tried again at a later scan
        path.unlink(missing_ok=True)
        self._seen.pop(path, None)
        if prune:
            self._prune(path.parent)

    def _seal(self, path: Path, name: str, reason: str) -> bool:
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # never what a link points to
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                self.quarantine.put(None, name, reason, kind="symlink")
                return True
            with os.fdopen(fd, "rb") as fh:
                self.quarantine.put(fh, name, reason)
            return True
        except OSError as exc:
            log.error("inbox: a failed file could not be sealed into the quarantine (%s); it stays in the inbox",
                      exc.strerror or exc.__class__.__name__)
            return False

    def seal_legacy_failed(self) -> int:
        """Seal plaintext files an older version left in failed/ (reason from their .reason.txt), then
        remove them; return how many."""
        if not self.failed_dir.is_dir():
            return 0
        sealed = 0
        for dirpath, _dirs, names in os.walk(self.failed_dir, topdown=False):
            for name in names:
                path = Path(dirpath) / name
                if name.endswith(REASON_SUFFIX) and (path.with_name(name[: -len(REASON_SUFFIX)])).exists():
                    continue  # read with its file below
                if name.endswith(REASON_SUFFIX) or name.startswith("."):
                    path.unlink(missing_ok=True)  # a reason (or temp file) whose file is gone
                    continue
                sidecar = path.with_name(name + REASON_SUFFIX)
                try:
                    reason = sidecar.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    reason = "moved to inbox/failed/ by an earlier version; no reason recorded"
                if self._seal(path, str(path.relative_to(self.failed_dir)), reason.strip()):
                    path.unlink(missing_ok=True)
                    sidecar.unlink(missing_ok=True)
                    sealed += 1
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        if sealed:
            log.warning("inbox: sealed %d plaintext file(s) left in %s/ by an earlier version into the encrypted "
                        "quarantine (`pacs-appliance import failed list`)", sealed, FAILED_DIR)
        return sealed

    def _prune(self, directory: Path) -> None:
        """Remove folders the import emptied, up to (not including) the inbox."""
        while directory != self.inbox and self.inbox in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _report(self, tally: Tally) -> None:
        failed = " (see `pacs-appliance import failed list` or the admin page Failed imports)" if tally.failed else ""
        log.info("inbox: %s%s", tally.describe(), failed)
        self.audit.record("import.run", "system", detail=f"inbox: {tally.describe()}")


def prune_processed(inbox: Path, keep_days: float, now: float | None = None) -> int:
    """Delete files in ``inbox/processed/`` imported more than ``keep_days`` ago (0 or less: keep them),
    and the folders that leaves empty; return how many files went. Their content is in the archive;
    the copies are plaintext, so they should not stay for ever."""
    root = Path(inbox) / PROCESSED_DIR
    if keep_days <= 0 or not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    removed = 0
    for dirpath, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            path = Path(dirpath) / name
            try:
                if path.lstat().st_mtime < cutoff:  # stamped at import by _private_now
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if Path(dirpath) != root:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass  # not empty
    if removed:
        log.info("inbox: removed %d file(s) from %s/ imported more than %g days ago", removed, PROCESSED_DIR,
                 keep_days)
    return removed


def _private_now(path: Path) -> None:
    """Make a file moved to processed/ private (plaintext DICOM) and stamp its mtime with now, so
    processed/ is pruned by when a file was imported, not by the date a CD or ZIP gave it."""
    try:
        os.chmod(path, PRIVATE_FILE)
        os.utime(path)
    except PermissionError:  # dropped by another user through a share: we may rename it, not chmod it
        log.warning("inbox: a processed file could not be made private (owned by another user)")


def _free_name(dest: Path) -> Path:
    """``dest``, or ``name (2).ext`` etc. if that (or its reason file) is taken."""
    candidate, n = dest, 1
    while candidate.exists() or candidate.with_name(candidate.name + REASON_SUFFIX).exists():
        n += 1
        candidate = dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
    return candidate
