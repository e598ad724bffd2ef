"""One backup run: everything new on the box goes to the target, then a snapshot, then the manifest.

Order (so a half sync never looks complete, and a restore always finds every
object its index names):

1. ``config`` and ``keyring.sealed`` (small, rewritten every run);
2. a snapshot of the index is taken *first*, and the objects to send are read
   from the snapshot itself, so the manifest lists exactly what that index
   refers to, even while ingest goes on;
3. the objects the target lacks, in parallel, under the bandwidth cap; each one
   is recorded in ``backup_object`` as soon as its upload completed, so an
   interrupted run resumes where it stopped;
4. the sealed snapshot, then the manifest last; then every recorded object is
   stamped ``manifest_at`` (``is_offsite`` says yes from then on);
5. retention: objects gone from the box are marked, and deleted offsite once
   older than ``retention_days``, as are old manifests and their snapshots.

A target without ``config`` that this box has written to before (an unmounted
NAS, a wiped bucket) is refused: sending only "what is new" there would build an
incomplete copy that looks healthy. ``resend`` (``backup run --resend``) forgets
the local state, so the run lists the target and sends whatever it lacks.

Resume: after a run that did not finish (or for a target with no local state,
e.g. a restored box) the run lists ``objects/`` on the target once and adopts
every complete object there (same size as on the box) without sending it again.
Atomic writes on the target make a present name a complete object.
"""
from __future__ import annotations

import datetime
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..archive import KeyStore, StorageArea
from ..errors import ApplianceError, NotFound
from ..index import snapshot
from ..index import utcnow
from . import manifest as mf
from .targets import Target, TargetError, Throttle, ThrottledReader

log = logging.getLogger(__name__)
RECORD_BATCH = 200


@dataclass
class SyncOptions:
    parallel: int = 4
    max_bytes_per_s: int = 0
    retention_days: int = 30


@dataclass
class SyncResult:
    result: str = "running"  # "success", "partial" (manifest written, some objects missing on the box), "failed"
    objects: int = 0
    bytes: int = 0
    adopted: int = 0
    manifest: str = ""
    pruned: int = 0
    missing_on_box: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


class Sync:
    def __init__(self, target: Target, target_key: str, keys: KeyStore, archive: StorageArea, index, work_dir: Path,
                 options: SyncOptions, progress: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None):
        self.target, self.target_key = target, target_key
        self.keys, self.archive, self.index = keys, archive, index
        self.keyring = archive.keyring
        self.work_dir = Path(work_dir)
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self.cancel = cancel or threading.Event()  # set when the appliance stops: finish in-flight uploads, stop
        self.throttle = Throttle(options.max_bytes_per_s)
        self._count_lock = threading.Lock()
        self._recycled: dict[str, int] = {}  # offsite-only objects of recycled studies (appliance/services/recycle.py)

    # -- the run -----------------------------------------------------------
    def run(self, result: SyncResult) -> SyncResult:
        started = time.monotonic()
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = utcnow()
        n, snap_name, manifest_name = mf.new_run_names(now)
        snap_path = self.work_dir / f"snapshot-{n}.db"
        sealed_path = self.work_dir / f"snapshot-{n}.sealed"
        try:
            if self.target.size(mf.CONFIG_NAME) is None and self._state_count():
                # Likely an unmounted NAS (an empty mount point) or a wiped bucket: sending only "what is
                # new" would leave an incomplete copy that looks fine, and may fill the local disk.
                raise TargetError(
                    f"{self.target.url} does not hold this box's backup any more, although earlier runs wrote "
                    "there: is the disk or share mounted? If the offsite copy was really lost, run "
                    "`pacs-appliance backup run --resend` to send everything again")
            self._put_bytes(mf.CONFIG_NAME, json.dumps(mf.CONFIG_DOC).encode(), result)
            sealed_keyring = self.keys.sealed_keyring()
            self._put_bytes(mf.KEYRING_NAME, sealed_keyring, result)

            snapshot.take(self.index.db, self.keyring.index_key, snap_path)
            wanted = snapshot.object_ids(snap_path, self.keyring.index_key)
            state = self._state()
            # No local state (a restored box: its snapshot's history says "success", but restore cleared
            # backup_object) also needs the listing, or everything would be sent again.
            self._recycled = snapshot.recycled_sizes(snap_path, self.keyring.index_key)
            if not state or self._needs_adopt():
                result.adopted = self._adopt(wanted, state)
            pending = [oid for oid in wanted if oid not in state]
            self.progress(f"{len(wanted)} objects in the index, {len(pending)} to send")
            self._upload_objects(pending, state, result)

            with open(snap_path, "rb") as src, open(sealed_path, "wb") as dst:
                mf.seal_blob(src, dst, n, self.keyring)
            snap_size = sealed_path.stat().st_size
            with open(sealed_path, "rb") as fh:
                self._put(snap_name, fh, snap_size, result)

            listed = {oid: state[oid] for oid in wanted if oid in state}
            result.missing_on_box = sorted(set(wanted) - set(listed))
            manifest = mf.Manifest(now.strftime("%Y-%m-%dT%H:%M:%SZ"), snap_name, snap_size, len(sealed_keyring),
                                   listed)
            self._put_bytes(manifest_name, manifest.seal(n, self.keyring), result)  # last: the run is now complete
            result.manifest = manifest_name
            if result.objects or result.adopted or self._unlisted:
                self.index.backup.stamp_listed(self.target_key, now)
            result.pruned = self._retention(set(wanted), state, now)
            result.result = "partial" if result.missing_on_box else "success"
            recycled = [oid for oid in result.missing_on_box if oid in self._recycled]
            lost = [oid for oid in result.missing_on_box if oid not in self._recycled]
            errors = []
            if lost:
                errors.append(f"{len(lost)} object(s) named by the index are missing from this box's disk and "
                              f"could not be backed up: {', '.join(lost[:10])}")
            if recycled:  # e.g. the target was changed after recycling: the old target holds them
                errors.append(f"{len(recycled)} object(s) of recycled studies are not on this target (their only "
                              "copy is on the target they were recycled from): bring those studies back with "
                              "`pacs-appliance storage restore` so they are backed up here")
            result.error = "; ".join(errors)
        finally:
            snap_path.unlink(missing_ok=True)
            sealed_path.unlink(missing_ok=True)
            result.seconds = time.monotonic() - started
        return result

    # -- state -------------------------------------------------------------
    def _state(self) -> dict[str, int]:
        """object id -> offsite size, for objects recorded as uploaded to this target (raw SQL: 100k rows)."""
        state, self._marked_deleted, self._unlisted = self.index.backup.uploaded(self.target_key)
        # (_unlisted: uploaded by an interrupted run, not yet in a manifest)
        return state

    def _state_count(self) -> int:
        return self.index.backup.count(self.target_key)

    def forget_state(self) -> None:
        """Forget what this box believes is on the target (the next run lists it and sends what is missing)."""
        self.index.backup.forget(self.target_key)

    def _needs_adopt(self) -> bool:
        return self.index.backup.last_finished_result(self.target_key) != "success"

    def _adopt(self, wanted: list[str], state: dict[str, int]) -> int:
        """Record objects already complete on the target (left by an interrupted run) as uploaded."""
        self.progress("checking what the target already holds (first run, or the last one did not finish)")
        want = set(wanted) - set(state)
        found = []
        for name, size in self.target.list("objects"):
            oid = name.rsplit("/", 1)[-1]
            # A recycled study's objects are not on the box; the target's copy is the one recorded.
            if oid in want and (self._local_size(oid) or self._recycled.get(oid)) == size:
                found.append((oid, size))
        self._record(found)
        state.update(found)
        return len(found)

    def _local_size(self, oid: str) -> int | None:
        return self.archive.sealed_size(oid)

    def _record(self, uploaded: list[tuple[str, int]]) -> None:
        if not uploaded:
            return
        self.index.backup.record_uploaded(self.target_key, uploaded)

    # -- uploads -----------------------------------------------------------
    def _put(self, name: str, fh, size: int, result: SyncResult) -> None:
        def count(n):
            with self._count_lock:  # upload threads add concurrently
                result.bytes += n

        self.target.put(name, ThrottledReader(fh, self.throttle, count), size)

    def _put_bytes(self, name: str, data: bytes, result: SyncResult) -> None:
        self._put(name, io.BytesIO(data), len(data), result)

    def _upload_one(self, oid: str, result: SyncResult) -> tuple[str, int] | None:
        try:
            fh = self.archive.open_sealed(oid)
        except NotFound:
            return None  # gone from the disk: reported as missing_on_box
        with fh:
            size = os.fstat(fh.fileno()).st_size
            self._put(mf.object_name(oid), fh, size, result)
        return oid, size

    def _upload_objects(self, pending: list[str], state: dict[str, int], result: SyncResult) -> None:
        if not pending:
            return
        done: list[tuple[str, int]] = []
        last_report = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel), thread_name_prefix="backup-up") as pool:
            todo = iter(pending)
            running = set()
            failure: BaseException | None = None
            while True:
                if self.cancel.is_set() and failure is None:
                    failure = TargetError("the backup was interrupted because the appliance is stopping; "
                                          "the next run resumes where it stopped")
                while failure is None and len(running) < self.options.parallel * 2:
                    oid = next(todo, None)
                    if oid is None:
                        break
                    running.add(pool.submit(self._upload_one, oid, result))
                if not running:
                    break
                finished, running = wait(running, timeout=1.0, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    try:
                        item = fut.result()
                    except BaseException as exc:  # noqa: BLE001 - the first failure stops the run
                        failure = failure or exc
                        continue
                    if item:
                        done.append(item)
                        state[item[0]] = item[1]
                        result.objects += 1
                if len(done) >= RECORD_BATCH or (failure and done):
                    self._record(done)
                    done = []
                if time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    self.progress(f"sent {result.objects}/{len(pending)} objects, {result.bytes / 1e6:.1f} MB")
            self._record(done)
            if failure is not None:
                if isinstance(failure, ApplianceError):
                    raise failure
                raise TargetError(f"upload to {self.target.url} failed after {result.objects} objects: "
                                  f"{failure.__class__.__name__}: {failure}") from failure

    # -- retention ---------------------------------------------------------
    def _retention(self, wanted: set[str], state: dict[str, int], now: datetime.datetime) -> int:
        keep_after = now - datetime.timedelta(days=self.options.retention_days)
        t = self.target_key
        deleted = self._marked_deleted  # as read at the start of the run; this run's uploads are all wanted
        gone = [oid for oid in state if oid not in wanted and oid not in deleted]
        back = [oid for oid in deleted if oid in wanted]

        if gone or back:
            self.index.backup.mark_gone(t, gone, back, now)
        pruned = 0
        # Manifests (and their snapshots) older than the retention period go first; the newest always stays.
        names = mf.manifest_names(self.target)
        cutoff = keep_after.strftime("%Y%m%dT%H%M%S.%fZ")
        for name in names[:-1]:
            stamp, n = mf.MANIFEST_NAME.match(name).groups()
            if stamp < cutoff:
                self.target.delete(name)
                self.target.delete(mf.snapshot_name(n))
                pruned += 1
        for oid in self.index.backup.expired(t, keep_after):
            self.target.delete(mf.object_name(oid))
            self.index.backup.forget(t, oid)
            pruned += 1
        return pruned
