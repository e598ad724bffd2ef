"""Recycling frees space with studies confirmed offsite, oldest use first, and nothing else."""
from __future__ import annotations

import pytest
from recyclekit import MiB

from appliance.index.models import Instance, Study
from appliance.index.models.backup import BackupObject
from appliance.index.models.recycle import RecycledObject, RecycledStudy


def fill(box):
    """A..D backed up; D then gets one more instance and E arrives, neither backed up."""
    for name in "ABCD":
        box.add_study(name)
    result = box.app.backup.run(trigger="manual")
    assert result.result == "success"
    box.add_instance(box.studies["D"])
    box.add_study("E")
    for name, days in (("A", 90), ("B", 60), ("C", 40), ("D", 80), ("E", 100)):
        box.age(name, days)


def squeeze(box, free_after_freeing: int) -> None:
    """Set the simulated disk so that freeing ``free_after_freeing`` bytes just meets the 3 MiB target."""
    box.capacity = box.archive_bytes() + 3 * MiB - free_after_freeing + 100


def audit_entries(box, action="storage.recycle"):
    box.app.audit.flush()
    return list(box.app.audit.query(action=action, newest_first=False))


def test_only_backed_up_studies_go_oldest_first_until_the_target(box):
    fill(box)
    sizes = {n: box.sealed_size(n) for n in "ABCDE"}
    ids = {n: box.object_ids(n) for n in "ABCDE"}
    squeeze(box, sizes["A"] + sizes["B"])
    assert box.free() < 3 * MiB

    report = box.app.recycler.run(trigger="test")

    assert [c.study_uid for c in report.recycled] == [box.studies["A"], box.studies["B"]]
    assert report.bytes_freed == sizes["A"] + sizes["B"]
    assert box.free() >= 3 * MiB and "target met" in report.result
    blocked = {c.study_uid: c.reason for c in report.blocked}
    assert blocked[box.studies["E"]] == "2 of 2 objects not yet offsite"
    assert blocked[box.studies["D"]] == "1 of 3 objects not yet offsite"  # one instance came after the backup
    for name in "AB":
        assert box.find(name) == [] and not any(box.app.archive.exists(o) for o in ids[name])
        assert all(box.app.backup.is_offsite(o) for o in ids[name])  # still offsite, and still listed
        assert all((box.nas / "objects" / o[:2] / o).exists() for o in ids[name])
    for name in "CDE":  # C was not needed; D and E are not safely offsite
        assert len(box.find(name)) == 1 and all(box.app.archive.exists(o) for o in ids[name])
    assert Study.select().count(box.app.index.db) == 3 and Instance.select().count(box.app.index.db) == 2 + 3 + 2

    entries = audit_entries(box)
    assert [e.study_uid for e in entries] == [box.studies["A"], box.studies["B"]]
    assert "2 instances" in entries[0].detail and f"{sizes['A']} bytes freed" in entries[0].detail
    assert entries[0].patient_id == "RCY1" and entries[0].actor == "system"
    assert box.app.audit.verify().ok
    assert RecycledObject.select().where(RecycledObject.purged_at.is_null()).count(box.app.index.db) == 0


def test_patient_counts_stay_right(box):
    box.add_study("A", patient_id="P1")
    box.add_study("B", patient_id="P1")
    box.add_study("C", patient_id="P2")
    box.app.backup.run(trigger="manual")
    for name, days in (("A", 30), ("C", 20), ("B", 10)):
        box.age(name, days)
    squeeze(box, box.sealed_size("A") + box.sealed_size("C"))
    assert len(box.app.recycler.run().recycled) == 2
    rows = box.app.index.db.execute_sql(
        "SELECT patient_id, num_studies, num_series, num_instances FROM patient").fetchall()
    assert rows == [("P1", 1, 2, 2)]  # P2 emptied and gone, as remove_instance does it
    study = Study.select().get(box.app.index.db)
    assert study.study_uid == box.studies["B"] and study.num_instances == 2


def test_recently_opened_study_is_kept_longer(box):
    fill(box)
    box.app.audit.record("study.view", "alice", study_uid=box.studies["A"], patient_id="RCY1")
    box.app.audit.flush()
    squeeze(box, box.sealed_size("B") + 10)
    report = box.app.recycler.run()
    assert [c.study_uid for c in report.recycled] == [box.studies["B"]]  # A was viewed today: kept
    assert box.studies["A"] not in {c.study_uid for c in report.blocked}  # and not even a candidate
    assert report.recent >= 1


def test_dry_run_and_recycling_off_delete_nothing(box, tmp_path):
    from recyclekit import make_recycle_box

    fill(box)
    squeeze(box, box.sealed_size("A") + box.sealed_size("B"))
    before = box.archive_bytes()
    report = box.app.recycler.run(dry_run=True)
    assert [c.study_uid for c in report.recycled] == [box.studies["A"], box.studies["B"]]
    assert box.archive_bytes() == before and Study.select().count(box.app.index.db) == 5 and not audit_entries(box)

    off = make_recycle_box(tmp_path, name="off", recycle="false")
    try:
        off.add_study("A")
        off.app.backup.run(trigger="manual")
        off.age("A", 365)
        off.capacity = off.archive_bytes() + 10  # the disk is all but full
        report = off.app.recycler.run()
        assert "off" in report.result and not report.recycled and len(off.find("A")) == 1
        assert off.app.recycler.settings.enabled is False and not off.app.recycler._task.running
    finally:
        off.app.index.close()


def test_restore_brings_a_recycled_study_back_byte_identical(box):
    fill(box)
    original = box.study_bytes("A")
    ids = sorted(box.object_ids("A"))
    squeeze(box, box.sealed_size("A"))
    report = box.app.recycler.run()
    assert [c.study_uid for c in report.recycled] == [box.studies["A"]] and box.find("A") == []
    assert [s.study_uid for s in box.app.recycler.recycled()] == [box.studies["A"]]

    box.capacity += 10 * MiB  # room again
    result = box.app.recycler.restore(box.studies["A"], actor="tester")
    assert result.instances == 2 and result.replaced == 0
    assert box.study_bytes("A") == original
    assert sorted(box.object_ids("A")) == ids  # the same objects: the backup sends nothing again
    found = box.find("A")
    assert len(found) == 1 and found[0]["NumberOfStudyRelatedInstances"] == 2
    assert box.app.recycler.recycled() == [] and RecycledObject.select().count(box.app.index.db) == 0
    assert RecycledStudy.select().get(box.app.index.db).restored_at is not None
    again = box.app.backup.run(trigger="manual")
    assert again.result == "success" and again.objects == 1 + 2  # only D's and E's new instances
    assert [e.study_uid for e in audit_entries(box, "storage.restore")] == [box.studies["A"]]


def test_retention_never_expires_a_recycled_study_offsite(tmp_path):
    from recyclekit import make_recycle_box

    from appliance.backup import manifest as mf

    # Retention 0 days: anything gone from the box is deleted offsite by the next run.
    b = make_recycle_box(tmp_path, backup={"retention_days": 0}, recycle_free_below_mb=3, recycle_target_free_mb=3)
    try:
        b.add_study("A")
        b.add_study("B")
        b.app.backup.run(trigger="manual")
        b.age("A", 50)
        ids = b.object_ids("A")
        squeeze(b, b.sealed_size("A"))
        assert len(b.app.recycler.run().recycled) == 1
        for _ in range(2):
            assert b.app.backup.run(trigger="manual").result == "success"
        assert all((b.nas / mf.object_name(o)).exists() for o in ids)
        assert all(b.app.backup.is_offsite(o) for o in ids)
        assert not BackupObject.select().where(BackupObject.deleted_at.is_null(False)).exists(b.app.index.db)
    finally:
        b.app.index.close()


def test_disaster_restore_keeps_recycled_studies_offsite_and_restorable(box, tmp_path):
    """The box is lost after recycling: a full restore skips the offsite-only study (no orphans on the new box),
    the new box's first backup is complete, and `storage restore` brings the study back there."""
    from appliance.app import build
    from appliance.backup.restore import restore
    from appliance.backup.targets import FolderTarget
    from appliance.config import load
    from appliance.index.reconcile import reconcile

    box.add_study("A")
    box.add_study("B")
    box.app.backup.run(trigger="manual")
    box.age("A", 50)
    original = box.study_bytes("A")
    squeeze(box, box.sealed_size("A"))
    assert len(box.app.recycler.run().recycled) == 1
    assert box.app.backup.run(trigger="manual").result == "success"  # the manifest now reflects the recycling
    recovery = box.app.keys.recovery_key()

    report = restore(FolderTarget(box.nas), recovery, tmp_path / "new")
    assert report.ok and report.objects == 2  # B only
    env = {"PACS_BACKUP_TARGET": f"file://{box.nas}", "PACS_INBOX_ENABLED": "false",
           "PACS_STORAGE_RESERVE_MB": "1"}
    new = build(load(tmp_path / "new", env=env), with_web=False)
    try:
        assert reconcile(new.archive, new.index).clean
        first = new.backup.run(trigger="manual")
        assert first.result == "success" and first.objects == 0, first.error  # recycled objects adopted too
        assert [s.study_uid for s in new.recycler.recycled()] == [box.studies["A"]]
        assert new.recycler.restore(box.studies["A"]).instances == 2
        rows = new.index.db.execute_sql(
            "SELECT i.sop_uid, i.object_id FROM instance i JOIN series se ON se.id = i.series_id "
            "JOIN study s ON s.id = se.study_id WHERE s.study_uid = ?", (box.studies["A"],)).fetchall()
        assert {sop: new.archive.read(oid) for sop, oid in rows} == original
        assert reconcile(new.archive, new.index).clean
    finally:
        new.index.close()


def test_arrivals_below_the_watermark_wake_the_service_but_not_when_stuck(box):
    r = box.app.recycler
    box.add_study("A")  # not backed up
    box.age("A", 50)
    box.capacity = box.archive_bytes() + 2 * MiB
    r._last_space_check = 0.0  # (the store above already looked, while there was room)
    r.on_instance_stored()
    assert r._low_space.is_set()
    r._low_space.clear()
    report = r.run(trigger="low space")
    assert report.needed and not report.recycled and len(report.blocked) == 1
    assert "1 study not yet offsite" in r.status()["warning"]
    r._last_space_check = 0.0
    r.on_instance_stored()
    assert not r._low_space.is_set()  # stuck: the next scheduled check retries, arrivals do not


def _replace_one(box, name: str) -> str:
    """Send a corrected version of one instance of the study (same SOP Instance UID, other bytes)."""
    import io

    import pydicom

    from appliance.ingest import Origin

    sop, oid = box.app.index.db.execute_sql(
        "SELECT i.sop_uid, i.object_id FROM instance i JOIN series se ON se.id = i.series_id "
        "JOIN study s ON s.id = se.study_id WHERE s.study_uid = ? LIMIT 1", (box.studies[name],)).fetchone()
    ds = pydicom.dcmread(io.BytesIO(box.app.archive.read(oid)))
    ds.StudyDescription = "corrected"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    box.app.ingestor.store_bytes(buf.getvalue(), Origin("import"))
    return oid


def test_replaced_versions_must_be_offsite_too_and_come_back(box):
    from appliance.index.models import ReplacedObject

    box.add_study("A")
    box.add_study("B")
    old_a = _replace_one(box, "A")
    box.app.backup.run(trigger="manual")
    old_b = _replace_one(box, "B")  # B's older version is on the box only... and so is its new one
    box.age("A", 60)
    box.age("B", 50)
    squeeze(box, box.sealed_size("A") + box.sealed_size("B") + box.app.archive.sealed_size(old_a)
            + box.app.archive.sealed_size(old_b))
    report = box.app.recycler.run()
    assert [c.study_uid for c in report.recycled] == [box.studies["A"]]
    assert {c.study_uid: c.reason for c in report.blocked}[box.studies["B"]] == "1 of 3 objects not yet offsite"
    assert not box.app.archive.exists(old_a) and not ReplacedObject.select().where(
        ReplacedObject.object_id == old_a).exists(box.app.index.db)
    assert RecycledObject.select().where(RecycledObject.object_id == old_a).get(box.app.index.db).replaced

    box.capacity += 10 * MiB
    result = box.app.recycler.restore(box.studies["A"])
    assert (result.instances, result.replaced) == (2, 1)
    assert ReplacedObject.select().where(ReplacedObject.object_id == old_a).exists(box.app.index.db)
    assert box.app.archive.exists(old_a)
    descriptions = {Study.select().where(Study.study_uid == box.studies["A"]).get(box.app.index.db).description}
    assert descriptions == {"corrected"}  # the current version is still the newer one


def test_inconsistent_settings_are_refused_with_a_reason(tmp_path):
    import pytest

    from appliance.config import load
    from appliance.errors import ConfigError
    from appliance.services.recycle import RecycleSettings

    def settings(**values):
        env = {f"PACS_STORAGE_{k.upper()}": str(v) for k, v in values.items()}
        return RecycleSettings.from_config(load(tmp_path, env=env))

    assert settings().enabled is False  # off by default
    settings(recycle="false", recycle_free_below_mb=1)  # checked only when on
    with pytest.raises(ConfigError, match="must be above reserve_mb"):
        settings(recycle="true", reserve_mb=1024, recycle_free_below_mb=1024)
    with pytest.raises(ConfigError, match="at least recycle_free_below_mb"):
        settings(recycle="true", recycle_free_below_mb=4096, recycle_target_free_mb=2048)
    with pytest.raises(ConfigError, match="cannot be negative"):
        settings(recycle="true", recycle_min_age_days=-1)
    ok = settings(recycle="true")
    assert ok.free_below == 4096 << 20 and ok.target_free == 8192 << 20 and ok.min_age.days == 30


def test_a_new_target_after_recycling_says_what_it_lacks(box, tmp_path):
    from appliance.app import build
    from appliance.config import load

    box.add_study("A")
    box.add_study("B")
    box.app.backup.run(trigger="manual")
    box.age("A", 50)
    squeeze(box, box.sealed_size("A"))
    assert len(box.app.recycler.run().recycled) == 1
    box.app.index.close()
    other = tmp_path / "other-nas"
    other.mkdir()
    app = build(load(box.data_dir, env={"PACS_BACKUP_TARGET": f"file://{other}", "PACS_STORAGE_RESERVE_MB": "1"}),
                with_web=False)
    try:
        result = app.backup.run(trigger="manual")
        assert result.result == "partial" and result.objects == 2  # B went; A's objects are elsewhere
        assert "2 object(s) of recycled studies are not on this target" in result.error
        assert "missing from this box's disk" not in result.error
    finally:
        app.index.close()
        box.app.index = app.index  # closed again by the fixture: harmless


def test_a_study_still_to_be_forwarded_is_kept(box):
    from appliance.index.models.retrieval import ForwardJob

    box.add_study("A")
    box.add_study("B")
    box.app.backup.run(trigger="manual")
    box.age("A", 60)
    box.age("B", 50)
    oid = box.object_ids("A")[0]
    box.app.index.writer.run(lambda: ForwardJob.insert(sop_uid="1.2.3", object_id=oid, destination="READPACS")
                             .execute(box.app.index.db))
    squeeze(box, box.sealed_size("A") + box.sealed_size("B"))
    report = box.app.recycler.run()
    assert [c.study_uid for c in report.recycled] == [box.studies["B"]]
    assert {c.study_uid: c.reason for c in report.blocked} == {
        box.studies["A"]: "1 instance still to be forwarded to a peer"}


def test_verification_racing_a_recycling_run_reports_no_missing_object(box, monkeypatch):
    from appliance.services import verify

    box.add_study("A")
    box.app.backup.run(trigger="manual")
    box.age("A", 50)
    listed = list(box.app.index.objects.rows())  # what a verification had read just before the study went
    squeeze(box, box.sealed_size("A"))
    assert len(box.app.recycler.run().recycled) == 1
    monkeypatch.setattr(box.app.index.objects, "rows", lambda: iter(listed))
    report = verify.verify_all(box.app.archive, box.app.index)
    assert report.ok and not report.missing


def test_the_sql_offsite_check_agrees_with_the_backup_service(box):
    """index.recycling.OFFSITE_JOIN is BackupService.is_offsite in SQL: the same answer for every kind of object."""
    import datetime

    from appliance.index.recycling import OFFSITE_JOIN

    box.add_study("A", n=5)
    box.app.backup.run(trigger="manual")
    ids = box.object_ids("A")
    target = box.app.backup.target_key()

    db = box.app.index.db

    def change():
        BackupObject.update(manifest_at=None).where(BackupObject.object_id == ids[1]).execute(db)  # no manifest
        BackupObject.update(target="file:///elsewhere").where(BackupObject.object_id == ids[2]).execute(db)
        BackupObject.delete().where(BackupObject.object_id == ids[3]).execute(db)  # never sent
        BackupObject.update(deleted_at=datetime.datetime(2020, 1, 1)).where(
            BackupObject.object_id == ids[4]).execute(db)

    box.app.index.writer.run(change)
    sql = dict(box.app.index.db.execute_sql(
        "SELECT i.object_id, b.size IS NOT NULL FROM instance i " + OFFSITE_JOIN.format(col="i.object_id"),
        (target,)).fetchall())
    assert {oid: bool(sql[oid]) for oid in ids} == {oid: box.app.backup.is_offsite(oid) for oid in ids}
    assert [bool(sql[oid]) for oid in ids] == [True, False, False, False, True]


@pytest.mark.sqlcipher  # local index snapshots are the embedded index's; PostgreSQL's server keeps its own
def test_a_recycling_run_is_followed_by_an_index_snapshot(box, tmp_path):
    """Issue 15: recycled rows (what is only offsite now) are in no archive object, so a rebuild needs a
    snapshot that has them: one is taken right after every run that recycled something."""
    from appliance.index.snapshot import _connect

    fill(box)
    squeeze(box, box.sealed_size("A"))
    before = {s.name for s in box.app.archive.snapshots.list()}
    nothing = box.app.recycler.run(trigger="test", dry_run=True)
    assert nothing.recycled and {s.name for s in box.app.archive.snapshots.list()} == before  # a dry run: none

    report = box.app.recycler.run(trigger="test")
    assert [c.study_uid for c in report.recycled] == [box.studies["A"]]
    new = [s for s in box.app.archive.snapshots.list() if s.name not in before]
    assert len(new) == 1
    copy = tmp_path / "snap.db"
    box.app.archive.snapshots.open_to(new[0].name, copy)
    conn = _connect(copy, box.app.archive.keyring.index_key)
    try:
        rows = conn.execute('SELECT "study_uid" FROM "recycled_study"').fetchall()
    finally:
        conn.close()
    assert rows == [(box.studies["A"],)]
