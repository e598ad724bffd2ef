"""``app.backup``: run a backup, report its status, say whether an object is safely offsite.

CONTRACT for other parts:
- ``status()`` -> dict: configured, target, running, last_run (dict or None),
  last_success_at (ISO UTC or None), last_success_age_hours (float or None),
  warn_after_hours, warning (bool), warning_reason (str). For the dashboard and /metrics.
- ``run_now(actor)`` asks the scheduler thread to run a backup soon (the admin UI's
  button); ``run(trigger, actor)`` runs one in the calling thread (the CLI).
- ``is_offsite(object_id)`` is True once the object is on the target *and* listed
  by a manifest there (docs/DESIGN.md invariant 6: delete nothing that is not).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from ..archive.fsutil import try_lock
from ..errors import ApplianceError
from ..index import utcnow
from .sync import Sync, SyncOptions, SyncResult
from .targets import Target, TargetError, open_target

log = logging.getLogger(__name__)


class BackupBusy(ApplianceError):
    """Another backup run holds the lock."""

    exit_code = 6


def _iso(dt) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


class BackupService:
    def __init__(self, settings, data_dir: Path, keys, archive, index, audit):
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.work_dir = self.data_dir / "backup"
        self.keys, self.archive, self.index, self.audit = keys, archive, index, audit
        self.scheduler = None  # set by schedule.Scheduler
        self._running = False
        self.cancel = threading.Event()  # the scheduler sets it on shutdown

    # -- targets -------------------------------------------------------------
    @property
    def configured(self) -> bool:
        return bool(self.settings.target)

    def target_options(self) -> dict:
        s = self.settings
        return dict(sftp_key_file=s.sftp_key_file,
                    known_hosts=Path(s.sftp_known_hosts) if s.sftp_known_hosts
                    else self.data_dir / "keys" / "backup_known_hosts",
                    s3_endpoint_url=s.s3_endpoint_url, s3_region=s.s3_region,
                    s3_access_key_file=s.s3_access_key_file, s3_secret_key_file=s.s3_secret_key_file)

    def open_target(self, url: str | None = None) -> Target:
        return open_target(url or self.settings.target, **self.target_options())

    def target_key(self) -> str:
        """How backup_object rows name the configured target (its URL; credentials are never in it)."""
        return self.settings.target

    # -- running -------------------------------------------------------------
    def _lock(self):
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = try_lock(self.work_dir / "lock")
        if fd is None:
            raise BackupBusy("a backup is already running on this box; wait for it to finish")
        return fd

    def run(self, trigger: str = "manual", actor: str = "system",
            progress: Callable[[str], None] | None = None, resend: bool = False) -> SyncResult:
        """Run one backup now, in this thread; the result is also in the history.

        ``resend`` forgets what this box believes is offsite first, for a target that lost its copy.
        """
        fd = self._lock()
        key = self.target_key()
        run_id = self.index.backup.start_run(key, trigger)
        result = SyncResult()
        self._running = True
        try:
            target = self.open_target()
            try:
                s = self.settings
                options = SyncOptions(parallel=s.parallel, max_bytes_per_s=s.max_kib_per_s * 1024,
                                      retention_days=s.retention_days)
                sync = Sync(target, key, self.keys, self.archive, self.index, self.work_dir, options, progress,
                            self.cancel)
                if resend:
                    sync.forget_state()
                sync.run(result)
            finally:
                target.close()
        except ApplianceError as exc:
            result.result, result.error = "failed", str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a dropped SSH connection: recorded, then reported
            result.result, result.error = "failed", f"{exc.__class__.__name__}: {exc}"
            raise TargetError(f"backup to {self.settings.target} failed: {result.error}") from exc
        finally:
            self._running = False
            self._finish(run_id, result)
            os.close(fd)
            self.audit.record("backup.run", actor, detail=(
                f"{result.result}: {result.objects} objects, {result.bytes} bytes"
                + (f"; {result.error}" if result.error else "")))
            log.info("backup %s: %d objects, %.1f MB in %.1f s%s", result.result, result.objects,
                     result.bytes / 1e6, result.seconds, f" ({result.error})" if result.error else "")
        return result

    def _finish(self, run_id: int, result: SyncResult) -> None:
        self.index.backup.finish_run(run_id, result=result.result, objects=result.objects, bytes=result.bytes,
                                     manifest=result.manifest, error=result.error)

    def run_now(self, actor: str = "system") -> None:
        """Ask the scheduler for a run as soon as possible (returns at once)."""
        if self.scheduler is None:
            raise ApplianceError("the backup scheduler is not running (start the appliance with `serve`)")
        self.scheduler.run_now(actor)

    # -- status --------------------------------------------------------------
    def history(self, limit: int = 20) -> list[dict]:
        return [self._run_dict(r) for r in self.index.backup.history(limit)]

    @staticmethod
    def _run_dict(r) -> dict:
        return {"id": r.id, "target": r.target, "trigger": r.trigger, "started_at": _iso(r.started_at),
                "finished_at": _iso(r.finished_at), "result": r.result, "objects": r.objects, "bytes": r.bytes,
                "manifest": r.manifest, "error": r.error}

    def status(self) -> dict:
        last = self.index.backup.last_run()
        success = self.index.backup.last_success()
        age = None
        if success and success.finished_at:
            age = (utcnow() - success.finished_at).total_seconds() / 3600
        warn_after = self.settings.warn_after_hours
        # The warning is about age (as the dashboard promises); a failed run inside the period is only noted.
        reason = ""
        if not self.configured:
            reason = "no backup target is configured ([backup] target)"
        elif age is None:
            reason = "no backup has completed yet"
        elif age > warn_after:
            reason = f"the last successful backup is {age:.0f} hours old (more than {warn_after})"
        warning = bool(reason)
        if not reason and last and last.result in ("failed", "partial"):
            reason = f"the last backup run {last.result}: {last.error[:200]}"
        return {
            "configured": self.configured,
            "target": self.settings.target,
            "running": self._running,
            "last_run": self._run_dict(last) if last else None,
            "last_success_at": _iso(success.finished_at) if success else None,
            "last_success_age_hours": age,
            "warn_after_hours": warn_after,
            "warning": warning,
            "warning_reason": reason,
        }

    def is_offsite(self, object_id: str) -> bool:
        return self.index.backup.is_offsite(self.target_key(), object_id)
