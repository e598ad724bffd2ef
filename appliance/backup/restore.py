"""Disaster restore: a new, empty data directory from the offsite copy and the recovery key alone.

1. ``keyring.sealed`` is opened with the recovery key: the archive and index keys;
2. the newest manifest that opens names the snapshot and the objects;
3. the snapshot is decrypted (every tag checked) into ``index.db``; the keys,
   config, archive and inbox folders are created as ``init`` would;
4. each object is downloaded into ``archive/tmp``, every tag checked, then
   renamed into place: byte for byte what the old box had on its disk;
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .. import config as config_mod
from ..archive import Archive, KeyStore, envelope
from ..archive.fsutil import fsync_dir, private_dir, write_file_atomic
from ..archive.keys import unseal_keyring
from ..audit import AuditLog
from ..errors import DataDirError, IntegrityError
from ..index import Index
from ..index.models.backup import BackupObject
from . import manifest as mf

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


def _download(target, name: str, dest: Path) -> int:
    total = 0
    with target.open(name) as src, open(dest, "wb") as dst:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            dst.write(block)
            total += len(block)
        dst.flush()
        os.fsync(dst.fileno())
    return total


def restore(target, recovery_key: bytes, data_dir: Path, *, studies: Iterable[str] = (),
            patients: Iterable[str] = (), parallel: int = 4,
            progress: Callable[[str], None] | None = None) -> RestoreReport:
    progress = progress or (lambda _m: None)
    data_dir = Path(data_dir)
    _check_empty(data_dir)
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
    progress(f"restoring from {man.name} (made {man.created}): {len(man.objects)} objects")

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
    os.replace(part, cfg.index_path)
    fsync_dir(data_dir)

    index = Index.open(cfg.index_path, keyring.index_key)
    try:
        # Recycled studies (appliance/recycle.py) stay offsite-only, as on the old box; their rows come along,
        # so `pacs-appliance storage restore` can still bring each one back.
        recycled = {r[0] for r in index.db.execute_sql("SELECT object_id FROM recycled_object").fetchall()}
        wanted = {oid: size for oid, size in man.objects.items() if oid not in recycled}
        if studies or patients:
            keep = index.writer.run(lambda: _keep_only(index, list(studies), list(patients)))
            wanted = {oid: size for oid, size in wanted.items() if oid in keep}
            progress(f"partial restore: {len(keep)} objects of the chosen studies")
        index.writer.run(lambda: BackupObject.delete().execute())
        report.objects = len(wanted)
        _fetch_objects(target, archive, wanted, report, parallel, progress)
        report.seconds = time.monotonic() - started
        AuditLog(index).record("restore.run", "system", detail=(
            f"from {target.url} {man.name}: {report.restored}/{report.objects} objects, "
            f"{len(report.missing)} missing, {len(report.damaged)} damaged"))
    finally:
        index.close()
    return report


def _fetch_objects(target, archive: Archive, wanted: dict[str, int], report: RestoreReport, parallel: int,
                   progress) -> None:
    last = [time.monotonic()]

    def one(oid: str) -> tuple[str, str | None, int]:
        name = mf.object_name(oid)
        tmp = archive.tmp_dir / oid
        try:
            size = _download(target, name, tmp)
            with open(tmp, "rb") as fh:  # every tag, before the object is put in place
                for _chunk in envelope.open_chunks(fh, size, bytes.fromhex(oid), archive.keyring.archive_key,
                                                   f"offsite object {oid}"):
                    pass
            final = archive.path(oid)
            private_dir(final.parent)
            os.rename(tmp, final)
            return oid, None, size
        except FileNotFoundError:
            return oid, "missing", 0
        except IntegrityError as exc:
            return oid, str(exc), 0
        finally:
            tmp.unlink(missing_ok=True)

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="restore") as pool:
        for oid, why, size in pool.map(one, wanted):
            if why == "missing":
                report.missing.append(mf.object_name(oid))
            elif why:
                report.damaged.append((mf.object_name(oid), why))
            else:
                report.restored += 1
                report.bytes += size
            if time.monotonic() - last[0] > 2:
                last[0] = time.monotonic()
                progress(f"restored {report.restored}/{len(wanted)} objects, {report.bytes / 1e6:.1f} MB")
    # Directories were created without fsync per object; one pass makes the renames durable.
    for d in {archive.path(oid).parent for oid in wanted}:
        if d.exists():
            fsync_dir(d)
            fsync_dir(d.parent)
    fsync_dir(archive.objects_dir)


def _keep_only(index, studies: list[str], patients: list[str]) -> set[str]:
    """Delete every study but the chosen ones from the restored index; return the objects to fetch."""
    db = index.db
    marks = lambda xs: ",".join("?" * len(xs)) or "NULL"  # noqa: E731
    keep_sql = (f"SELECT s.id FROM study s JOIN patient p ON p.id = s.patient_id "
                f"WHERE s.study_uid IN ({marks(studies)}) OR p.patient_id IN ({marks(patients)})")
    params = [*studies, *patients]
    if not db.execute_sql(keep_sql, params).fetchall():
        raise DataDirError("none of the chosen studies or patients is in the backup's index")
    db.execute_sql(f"DELETE FROM study WHERE id NOT IN ({keep_sql})", params)  # cascades to series, instances
    db.execute_sql("DELETE FROM patient WHERE id NOT IN (SELECT patient_id FROM study)")
    db.execute_sql("DELETE FROM replaced_object")
    db.execute_sql("""UPDATE patient SET
        num_studies = (SELECT count(*) FROM study WHERE study.patient_id = patient.id),
        num_series = (SELECT count(*) FROM series JOIN study ON study.id = series.study_id
                      WHERE study.patient_id = patient.id),
        num_instances = (SELECT count(*) FROM instance JOIN series ON series.id = instance.series_id
                         JOIN study ON study.id = series.study_id WHERE study.patient_id = patient.id)""")
    return {r[0] for r in db.execute_sql("SELECT object_id FROM instance").fetchall()}
