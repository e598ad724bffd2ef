"""Disaster restore: a new, empty data directory from the offsite copy and the recovery key alone.

1. ``keyring.sealed`` is opened with the recovery key: the archive and index keys;
2. the newest manifest that opens names the snapshot and the objects;
3. the snapshot is decrypted (every tag checked) into ``index.db``; the keys,
   config, archive and inbox folders are created as ``init`` would; with ``index_url`` the
   snapshot is copied into that empty PostgreSQL database instead (index/transfer.py: the
   snapshot is a SQLCipher file whichever backend the old box used) and the new config names it;
4. each object is downloaded into a staging folder of the archive, every tag
   checked, then adopted (renamed into place): byte for byte what the old box
   had on its disk (fetch.py, shared with bringing back a recycled study);
5. a summary; objects that are missing or fail their check are named, and the
   exit status says the restore is incomplete.

Partial restore (``studies``/``patients``): the index keeps only those studies
(the others are deleted from the restored index, counts recomputed) and only
their objects are fetched; the restored box is a consistent, smaller archive.

The restored index forgets which objects were offsite (that was the old box's
state); its first backup to the same target lists the target once and sends
nothing that is already there.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import config as config_mod
from ..archive import Archive, KeyStore, StorageArea
from ..archive.fsutil import fsync_dir, write_file_atomic
from ..archive.keys import unseal_keyring
from ..errors import DataDirError, IntegrityError
from ..index import Index, check_url as check_index_url
from ..records.audit import AuditLog
from . import manifest as mf
from .fetch import MISSING, fetch

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    manifest: str = ""
    objects: int = 0  # objects to restore
    restored: int = 0
    bytes: int = 0
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged


def _check_empty(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataDirError(f"{data_dir} is not empty: restore only into a new, empty data directory "
                           "(nothing there is ever overwritten)")


def restore(target, recovery_key: bytes, data_dir: Path, *, studies: Iterable[str] = (),
            patients: Iterable[str] = (), parallel: int = 4,
            progress: Callable[[str], None] | None = None, index_url: str = "",
            allow_insecure: bool = False) -> RestoreReport:
    progress = progress or (lambda _m: None)
    data_dir = Path(data_dir)
    _check_empty(data_dir)
    if index_url:
        check_index_url(index_url, allow_insecure)  # before anything is made
    started = time.monotonic()
    report = RestoreReport()

    try:
        with target.open(mf.KEYRING_NAME) as fh:
            keyring = unseal_keyring(fh.read(), recovery_key)
    except FileNotFoundError:
        raise DataDirError(f"{target.url} holds no keyring.sealed: it is not a PACS Appliance backup "
                           "(or the target URL is wrong)") from None
    man = mf.latest_manifest(target, keyring,
                             on_skip=lambda name, exc: progress(f"skipping damaged manifest {name}: {exc}"))
    report.manifest = man.name
    progress(f"restoring from {man.name} (made {man.created}): {man.count} objects")

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o750)
    write_file_atomic(data_dir / config_mod.CONFIG_FILE_NAME, config_mod.render_documented_defaults().encode())
    cfg = config_mod.load(data_dir, env={})
    KeyStore(cfg.keys_dir).create(keyring, recovery_key)
    archive = Archive(cfg.archive_dir, keyring)
    archive.create_dirs()
    cfg.inbox_dir.mkdir(mode=0o750, exist_ok=True)

    # The snapshot: decrypted (tags checked) into index.db; its content stays SQLCipher-encrypted.
    n = mf.MANIFEST_NAME.match(man.name).group(2)
    part = data_dir / "index.db.part"
    try:
        with target.open(man.snapshot) as src, open(part, "wb") as dst:
            for chunk in mf.open_blob(src, man.snapshot_size, n, keyring, man.snapshot):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:
        raise IntegrityError(f"the index snapshot {man.snapshot} is missing from {target.url}") from None
    if index_url:
        _into_postgres(part, keyring.index_key, index_url, allow_insecure, data_dir, progress)
    else:
        os.replace(part, cfg.index_path)
    fsync_dir(data_dir)

    index = Index.open(cfg.index_path, keyring.index_key, url=index_url, allow_insecure=allow_insecure)
    try:
        # Recycled studies (appliance/services/recycle.py) stay offsite-only, as on the old box; their rows come along,
        # so `pacs-appliance storage restore` can still bring each one back.
        recycled = index.recycling.object_ids()
        keep = None
        if studies or patients:
            keep = index.writer.run(lambda: index.backup.keep_only(list(studies), list(patients)))
            progress(f"partial restore: {len(keep)} objects of the chosen studies")

        def wanted() -> Iterator[tuple[str, int]]:
            """The manifest's objects to fetch, streamed (read again for each pass, never held whole)."""
            return ((oid, size) for oid, size in man.objects()
                    if oid not in recycled and (keep is None or oid in keep))

        index.backup.forget_all()
        _fetch_objects(target, archive, wanted, report, parallel, progress)
        report.seconds = time.monotonic() - started
        AuditLog(index).record("restore.run", "system", detail=(
            f"from {target.url} {man.name}: {report.restored}/{report.objects} objects, "
            f"{len(report.missing)} missing, {len(report.damaged)} damaged"))
    finally:
        index.close()
    return report


def _into_postgres(snapshot: Path, index_key: bytes, url: str, allow_insecure: bool, data_dir: Path,
                   progress) -> None:
    """The decrypted snapshot copied into the empty PostgreSQL database ``url``, which the new config names."""
    from ..index import open_index
    from ..index.transfer import copy
    from ..index_migration import open_empty_target, set_index_url

    src = open_index(snapshot, index_key)  # an older snapshot is brought to this version's schema first
    try:
        dst = open_empty_target(url, allow_insecure)
        try:
            report = copy(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{snapshot}{suffix}").unlink(missing_ok=True)
    set_index_url(data_dir, url, allow_insecure)
    progress(f"index snapshot copied into PostgreSQL: {report.total} rows in {len(report.rows)} tables")


def _fetch_objects(target, archive: StorageArea, wanted: Callable[[], Iterator[tuple[str, int]]],
                   report: RestoreReport, parallel: int, progress) -> None:
    last = time.monotonic()
    staging = archive.staging("tmp")  # a new data directory: nothing else writes there

    def counted() -> Iterator[str]:
        for oid, _size in wanted():
            report.objects += 1
            yield oid

    for got in fetch(target, archive, staging, counted(), parallel=parallel, thread_name="restore"):
        if got.error == MISSING:
            report.missing.append(mf.object_name(got.object_id))
        elif got.error:
            report.damaged.append((mf.object_name(got.object_id), got.error))
        else:
            report.restored += 1
            report.bytes += got.size
        if time.monotonic() - last > 2:
            last = time.monotonic()
            progress(f"restored {report.restored}/{report.objects}+ objects, {report.bytes / 1e6:.1f} MB")
    # Objects were moved in without a directory fsync each; one pass (the manifest read once more) makes the
    # renames durable.
    archive.sync_adopted(oid for oid, _size in wanted())
