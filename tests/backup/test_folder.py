"""Backup to a folder target: layout, incremental runs, resume, verify, tamper, retention, restore."""
from __future__ import annotations

import re
import time

import pytest
from backupkit import sealed_bytes

from appliance.archive.keys import KeyStore
from appliance.backup import manifest as mf
from appliance.backup.restore import restore
from appliance.backup.targets import FolderTarget, TargetError, Throttle
from appliance.backup.verify import verify
from appliance.index.models import Instance
from appliance.index.models.backup import BackupRun

NAME = re.compile(r"^(config|keyring\.sealed|objects/[0-9a-f]{2}/[0-9a-f]{32}|snapshots/[0-9a-f]{32}|"
                  r"manifests/\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{32})$")


def offsite_files(nas):
    return {str(p.relative_to(nas)): p for p in nas.rglob("*") if p.is_file()}


def test_full_then_incremental_and_opaque(folder_box):
    box = folder_box
    uids = box.add_study(3, patient_id="OPAQUE1", patient_name="SECRET^NAME") + box.add_study(2, patient_id="OPAQUE2")
    first = box.app.backup.run()
    assert first.result == "success" and first.objects == 5
    files = offsite_files(box.nas)
    assert all(NAME.match(n) for n in files), sorted(files)  # only opaque names, no temp leftovers
    blob = b"".join(p.read_bytes() for p in files.values())
    for secret in [u.encode() for u in uids] + [b"OPAQUE1", b"SECRET^NAME", b"SECRET"]:
        assert secret not in blob  # the provider learns nothing but names and sizes
    assert all(box.app.backup.is_offsite(oid) for oid in box.object_ids())

    second = box.app.backup.run()
    assert second.result == "success" and second.objects == 0
    box.add_study(1, patient_id="OPAQUE3")
    third = box.app.backup.run()
    assert third.objects == 1
    status = box.app.backup.status()
    assert status["warning"] is False and status["last_run"]["result"] == "success"
    assert status["last_success_age_hours"] < 0.1
    report = verify(FolderTarget(box.nas), box.app.archive.keyring, box.app.keys.recovery_key(), full=True)
    assert report.ok and report.decrypted == 6 and report.objects == 6


class FailingTarget:
    """A folder target that dies in the middle of the ``fail_at``-th object upload (after some bytes)."""

    def __init__(self, inner, fail_at=None):
        self.inner, self.fail_at, self.url = inner, fail_at, inner.url
        self.objects_put: list[str] = []

    def put(self, name, src, size):
        if name.startswith("objects/"):
            if self.fail_at is not None and len(self.objects_put) + 1 >= self.fail_at:
                class Dying:
                    sent = 0

                    def read(self, n=-1):
                        data = src.read(min(n, 1000) if n and n > 0 else 1000)
                        self.sent += len(data)
                        if not data or self.sent > 2000:
                            raise ConnectionResetError("target killed")
                        return data

                return self.inner.put(name, Dying(), size)
            self.objects_put.append(name)
        return self.inner.put(name, src, size)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def test_interrupted_sync_resumes_without_resending(folder_box, monkeypatch):
    box = folder_box
    for i in range(4):
        box.add_study(3, patient_id=f"RES{i}")
    dying = FailingTarget(FolderTarget(box.nas), fail_at=6)
    monkeypatch.setattr(box.app.backup, "open_target", lambda url=None: dying)
    box.app.backup.settings.values["parallel"] = 1  # deterministic: exactly 5 complete before the failure
    with pytest.raises(TargetError, match="target killed"):
        box.app.backup.run()
    run = box.app.index.backup.last_run()
    assert run.result == "failed" and "target killed" in run.error
    assert not box.app.backup.is_offsite(box.object_ids()[0])  # no manifest yet: not safely offsite
    files = offsite_files(box.nas)
    assert not any(n.startswith("manifests/") for n in files)  # a half sync never looks complete
    assert not any(".tmp-" in n for n in files)  # the killed upload left no half object
    complete = set(dying.objects_put)
    assert len(complete) == 5

    # Lose the local record of the last completed uploads too (as if the box died before writing it).
    box.app.index.backup.forget_all()
    resumed = FailingTarget(FolderTarget(box.nas))
    monkeypatch.setattr(box.app.backup, "open_target", lambda url=None: resumed)
    result = box.app.backup.run()
    assert result.result == "success"
    assert result.adopted == 5 and result.objects == 12 - 5
    assert not complete & set(resumed.objects_put)  # nothing complete was sent again
    assert all(box.app.backup.is_offsite(oid) for oid in box.object_ids())


def test_tampered_and_missing_objects_reported_on_verify_and_restore(folder_box, tmp_path):
    box = folder_box
    box.add_study(4, patient_id="TAMPER1")
    assert box.app.backup.run().result == "success"
    oids = sorted(box.object_ids())
    tampered = box.nas / mf.object_name(oids[0])
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    (box.nas / mf.object_name(oids[1])).unlink()

    keyring = box.app.archive.keyring
    recovery = box.app.keys.recovery_key()
    report = verify(FolderTarget(box.nas), keyring, recovery, full=True)
    assert report.missing == [mf.object_name(oids[1])]
    assert [n for n, _ in report.damaged] == [mf.object_name(oids[0])]
    assert "authentication failed" in report.damaged[0][1]
    # Presence-only verify still finds the missing one.
    assert verify(FolderTarget(box.nas), keyring, sample=0).missing == [mf.object_name(oids[1])]

    restored = restore(FolderTarget(box.nas), recovery, tmp_path / "restored")
    assert restored.restored == 2 and restored.objects == 4
    assert restored.missing == [mf.object_name(oids[1])]
    assert [n for n, _ in restored.damaged] == [mf.object_name(oids[0])]
    assert not (tmp_path / "restored" / "archive" / "objects" / oids[0][:2] / oids[0][2:4] / oids[0]).exists()


def test_restore_with_wrong_recovery_key_is_refused(folder_box, tmp_path):
    from appliance.errors import KeyStoreError

    box = folder_box
    box.add_study(1)
    box.app.backup.run()
    with pytest.raises(KeyStoreError, match="recovery key does not open"):
        restore(FolderTarget(box.nas), bytes(32), tmp_path / "r")


def test_restore_round_trip_in_process(folder_box, tmp_path):
    from appliance.archive import Archive
    from appliance.index import Index

    box = folder_box
    box.add_study(3, patient_id="RT1")
    box.add_study(2, patient_id="RT2", kind="MR")
    box.app.backup.run()
    report = restore(FolderTarget(box.nas), box.app.keys.recovery_key(), tmp_path / "new")
    assert report.ok and report.restored == 5
    keyring = KeyStore(tmp_path / "new" / "keys").load()
    assert keyring.archive_keys == box.app.archive.keyring.archive_keys
    new_archive = Archive(tmp_path / "new" / "archive", keyring)
    for oid in box.object_ids():
        assert sealed_bytes(new_archive, oid) == sealed_bytes(box.app.archive, oid)
        assert new_archive.read(oid) == box.app.archive.read(oid)
    expected = box.app.index.search("STUDY", {"PatientID": "*"})
    # The restored index answers the same (opened in a fresh process-like handle).
    box.app.index.close()
    new_index = Index.open(tmp_path / "new" / "index.db", keyring.index_key)
    try:
        assert sorted(map(repr, new_index.search("STUDY", {"PatientID": "*"}))) == sorted(map(repr, expected))
    finally:
        new_index.close()


def test_partial_restore_of_one_study(folder_box, tmp_path):
    from appliance.index import Index

    box = folder_box
    keep = box.add_study(2, patient_id="PART1")
    box.add_study(3, patient_id="PART1")
    box.add_study(1, patient_id="PART2")
    study_uid = box.app.index.search("IMAGE", {"SOPInstanceUID": keep[0], "StudyInstanceUID": ""})[0][
        "StudyInstanceUID"]
    box.app.backup.run()
    report = restore(FolderTarget(box.nas), box.app.keys.recovery_key(), tmp_path / "one", studies=[study_uid])
    assert report.ok and report.restored == 2
    keyring = KeyStore(tmp_path / "one" / "keys").load()
    box.app.index.close()
    idx = Index.open(tmp_path / "one" / "index.db", keyring.index_key)
    try:
        studies = idx.search("STUDY", {"PatientID": "*"})
        assert [s["StudyInstanceUID"] for s in studies] == [study_uid]
        patients = idx.search("PATIENT", {"PatientID": "*", "NumberOfPatientRelatedInstances": ""})
        assert [(p["PatientID"], int(p["NumberOfPatientRelatedInstances"])) for p in patients] == [("PART1", 2)]
    finally:
        idx.close()


def test_retention_keeps_deleted_objects_then_prunes(tmp_path):
    from backupkit import make_box

    nas = tmp_path / "nas"
    nas.mkdir()
    box = make_box(tmp_path, f"file://{nas}", retention_days=0)
    try:
        box.add_study(2, patient_id="RET1")
        box.app.backup.run()
        gone = box.object_ids()[0]
        db = box.app.index.db
        box.app.index.writer.run(lambda: Instance.delete().where(Instance.object_id == gone).execute(db))
        box.app.archive.delete(gone)
        box.app.backup.run()  # marks it deleted; still offsite
        assert (nas / mf.object_name(gone)).exists()
        time.sleep(0.01)
        box.app.backup.run()  # older than 0 days now: pruned offsite, with old manifests
        assert not (nas / mf.object_name(gone)).exists()
        assert len(mf.manifest_names(FolderTarget(nas))) == 1
        assert verify(FolderTarget(nas), box.app.archive.keyring, full=True).ok
    finally:
        box.app.index.close()


def test_throttle_caps_rate():
    throttle = Throttle(1_000_000)
    start = time.monotonic()
    for _ in range(30):
        throttle.consume(50_000)  # 1.5 MB at 1 MB/s, the first 1 MB is the burst allowance
    assert time.monotonic() - start >= 0.45


def test_status_warns_when_unconfigured_or_old(folder_box):
    import datetime

    box = folder_box
    status = box.app.backup.status()
    assert status["warning"] and "no backup has completed" in status["warning_reason"]
    box.app.backup.run()
    old = datetime.datetime.utcnow() - datetime.timedelta(hours=49)
    box.app.index.writer.run(lambda: BackupRun.update(finished_at=old).execute(box.app.index.db))
    status = box.app.backup.status()
    assert status["warning"] and status["last_success_age_hours"] > 48


def test_stopping_the_appliance_interrupts_a_run_cleanly(folder_box):
    box = folder_box
    box.add_study(3, patient_id="STOP1")
    box.app.backup.cancel.set()
    with pytest.raises(TargetError, match="appliance is stopping"):
        box.app.backup.run()
    assert box.app.backup.status()["last_run"]["result"] == "failed"
    box.app.backup.cancel.clear()
    assert box.app.backup.run().result == "success"


def test_an_emptied_target_is_not_mistaken_for_a_complete_one(folder_box):
    import shutil

    box = folder_box
    box.add_study(2, patient_id="UNMOUNT")
    box.app.backup.run()
    for child in box.nas.iterdir():  # the NAS is unmounted: the mount point is empty
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    with pytest.raises(TargetError, match="is the disk or share mounted"):
        box.app.backup.run()
    assert not any(box.nas.iterdir())
    result = box.app.backup.run(resend=True)
    assert result.result == "success" and result.objects == 2
    assert verify(FolderTarget(box.nas), box.app.archive.keyring, full=True).ok
