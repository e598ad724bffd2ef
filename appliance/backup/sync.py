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

import collections
import datetime
import io
import itertools
import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator

from ..archive import KeyStore, StorageArea
from ..errors import ApplianceError, NotFound
from ..index import snapshot
from ..index import utcnow
from ..index.backup import Uploaded
from ..sortedmerge import align
from . import manifest as mf
from .targets import Target, TargetError, Throttle, ThrottledReader

log = logging.getLogger(__name__)
RECORD_BATCH = 200
WINDOW = 10_000  # objects between the oldest upload still running and the newest planned (manifest order)
CHANGES_BATCH = 5000


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
        self._recycled_missing: set[str] = set()  # recycled studies' objects (services/recycle.py) not on the target
        self._unlisted = False

    # -- the run -----------------------------------------------------------
    def run(self, result: SyncResult) -> SyncResult:
        started = time.monotonic()
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = utcnow()
        n, snap_name, manifest_name = mf.new_run_names(now)
        snap_path = self.work_dir / f"snapshot-{n}.db"
        sealed_path = self.work_dir / f"snapshot-{n}.sealed"
        lines_path = self.work_dir / f"manifest-{n}.lines"
        sealed_manifest = self.work_dir / f"manifest-{n}.sealed"
        changes_path = self.work_dir / f"changes-{n}"
        manifest = None
        try:
            recorded = self._state_count()
            if self.target.size(mf.CONFIG_NAME) is None and recorded:
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
            # No local state (a restored box: its snapshot's history says "success", but restore cleared
            # backup_object) also needs the listing, or everything would be sent again.
            adopt = not recorded or self._needs_adopt()
            if adopt:
                self.progress("checking what the target already holds (first run, or the last one did not finish)")
            manifest = mf.ManifestWriter(lines_path)
            with open(changes_path, "w+") as changes:
                plan = self._plan(snapshot.wanted(snap_path, self.keyring.index_key),
                                  self.index.backup.uploaded(self.target_key),
                                  mf.object_listing(self.target) if adopt else None, changes, result)
                self._send(plan, manifest, result)
                self.progress(f"{manifest.count + len(result.missing_on_box)} objects in the index, "
                              f"{result.objects} sent, {result.adopted} found already offsite")

                with open(snap_path, "rb") as src, open(sealed_path, "wb") as dst:
                    mf.seal_blob(src, dst, n, self.keyring)
                snap_size = sealed_path.stat().st_size
                with open(sealed_path, "rb") as fh:
                    self._put(snap_name, fh, snap_size, result)

                with open(sealed_manifest, "wb") as dst:
                    manifest.seal(dst, n, self.keyring, created=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  snapshot=snap_name, snapshot_size=snap_size, keyring_size=len(sealed_keyring))
                with open(sealed_manifest, "rb") as fh:  # last: the run is now complete
                    self._put(manifest_name, fh, sealed_manifest.stat().st_size, result)
                result.manifest = manifest_name
                if result.objects or result.adopted or self._unlisted:
                    self.index.backup.stamp_listed(self.target_key, now)
                result.pruned = self._retention(changes, now)
            result.result = "partial" if result.missing_on_box else "success"
            recycled = [oid for oid in result.missing_on_box if oid in self._recycled_missing]
            lost = [oid for oid in result.missing_on_box if oid not in self._recycled_missing]
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
            if manifest is not None:
                manifest.close()
            for path in (snap_path, sealed_path, lines_path, sealed_manifest, changes_path):
                path.unlink(missing_ok=True)
            result.seconds = time.monotonic() - started
        return result

    # -- state -------------------------------------------------------------
    def _state_count(self) -> int:
        return self.index.backup.count(self.target_key)

    def forget_state(self) -> None:
        """Forget what this box believes is on the target (the next run lists it and sends what is missing)."""
        self.index.backup.forget(self.target_key)

    def _needs_adopt(self) -> bool:
        return self.index.backup.last_finished_result(self.target_key) != "success"

    def _plan(self, wanted: Iterator[tuple[str, int | None]], uploaded: Iterator[Uploaded],
              listing: Iterator[tuple[str, int]] | None, changes, result: SyncResult
              ) -> Iterator[tuple[str, int | None, bool]]:
        """The run's one pass: what the snapshot names (``wanted``), what is recorded as uploaded and, when
        adopting, the target's listing, all three sorted by object id and merged side by side (bounded memory:
        sortedmerge.align). Yields (object id, offsite size, recycled) for every object the manifest is to list,
        in order, with size None for one to send. Objects complete on the target but not recorded (left by an
        interrupted run, or a restored box's first run) are adopted as they pass. Objects that left the box, or
        came back, are written to ``changes`` for retention, which runs once the manifest is written."""
        self._unlisted = False  # some uploaded by an interrupted run, in no manifest yet
        adopted: list[tuple[str, int]] = []
        pairs: Iterator = align(wanted, uploaded, left_key=itemgetter(0), right_key=itemgetter(0))
        if listing is not None:
            pairs = align(pairs, listing, left_key=lambda pair: (pair[0] or pair[1])[0], right_key=itemgetter(0))
        else:
            pairs = ((pair, None) for pair in pairs)
        for pair, listed in pairs:
            if pair is None:
                continue  # on the target only: retention's business, not this run's
            (want, done) = pair
            if done is not None:
                self._unlisted = self._unlisted or done.unlisted
                if want is None:
                    if not done.deleted:
                        changes.write(f"gone {done.object_id}\n")  # left the box: retention starts
                    continue
                if done.deleted:
                    changes.write(f"back {done.object_id}\n")  # came back: retention stops
                yield done.object_id, done.size, want[1] is not None
                continue
            oid, recycled_size = want
            # A recycled study's objects are not on the box; the target's copy is the one recorded.
            if listed is not None and (self.archive.sealed_size(oid) or recycled_size) == listed[1]:
                adopted.append(listed)
                result.adopted += 1
                if len(adopted) >= RECORD_BATCH:
                    self._record(adopted)
                    adopted = []
                yield oid, listed[1], recycled_size is not None
            else:
                yield oid, None, recycled_size is not None
        self._record(adopted)

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

    def _send(self, plan: Iterator[tuple[str, int | None, bool]], manifest: mf.ManifestWriter,
              result: SyncResult) -> None:
        """Upload what ``plan`` says to send, in parallel, and write every object to the manifest in plan order.

        A window of at most ``WINDOW`` objects (``parallel * 2`` of them uploading) is all that is held: an
        object's manifest line waits for the uploads before it, so the manifest stays in id order. Each upload is
        recorded in ``backup_object`` (in batches) as soon as it completed, so an interrupted run resumes."""
        parallel = max(1, self.options.parallel)
        window: collections.deque = collections.deque()  # [object id, size or Future, recycled], in plan order
        uploading = 0
        done: list[tuple[str, int]] = []
        failure: BaseException | None = None
        last_report = time.monotonic()
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="backup-up") as pool:
            while True:
                if self.cancel.is_set() and failure is None:
                    failure = TargetError("the backup was interrupted because the appliance is stopping; "
                                          "the next run resumes where it stopped")
                while failure is None and uploading < parallel * 2 and len(window) < WINDOW:
                    item = next(plan, None)
                    if item is None:
                        break
                    oid, size, recycled = item
                    if size is None:
                        size = pool.submit(self._upload_one, oid, result)
                        uploading += 1
                    window.append((oid, size, recycled))
                if not window:
                    break
                head = window[0][1]
                if isinstance(head, Future) and not head.done():
                    wait([head], timeout=1.0)
                while window and not (isinstance(window[0][1], Future) and not window[0][1].done()):
                    oid, size, recycled = window.popleft()
                    if isinstance(size, Future):
                        uploading -= 1
                        try:
                            item = size.result()
                        except BaseException as exc:  # noqa: BLE001 - the first failure stops the run
                            failure = failure or exc
                            continue
                        if item is None:
                            result.missing_on_box.append(oid)
                            if recycled:
                                self._recycled_missing.add(oid)
                            continue
                        done.append(item)
                        result.objects += 1
                        size = item[1]
                    if failure is None:
                        manifest.add(oid, size)
                if len(done) >= RECORD_BATCH or (failure and done):
                    self._record(done)
                    done = []
                if failure is not None and not uploading:
                    break
                if time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    self.progress(f"sent {result.objects} objects, {result.bytes / 1e6:.1f} MB")
            self._record(done)
        if failure is not None:
            if isinstance(failure, ApplianceError):
                raise failure
            raise TargetError(f"upload to {self.target.url} failed after {result.objects} objects: "
                              f"{failure.__class__.__name__}: {failure}") from failure

    # -- retention ---------------------------------------------------------
    def _retention(self, changes, now: datetime.datetime) -> int:
        keep_after = now - datetime.timedelta(days=self.options.retention_days)
        t = self.target_key
        changes.seek(0)  # what left the box and what came back, as the run's merge found it
        while True:
            batch = [line.split() for line in itertools.islice(changes, CHANGES_BATCH)]
            if not batch:
                break
            self.index.backup.mark_gone(t, [oid for what, oid in batch if what == "gone"],
                                        [oid for what, oid in batch if what == "back"], now)
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
