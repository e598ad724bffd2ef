"""Start-up reconciliation: orphans moved aside (kept), missing objects reported loudly."""
from __future__ import annotations

import logging
import os

import synth
from appliance.archive import Archive, Keyring, envelope
from appliance.index.models import Instance
from appliance.index.reconcile import reconcile


def test_agreeing_index_and_archive(core, caplog):
    for i in range(3):
        core.store(synth.make_instance("CT", patient_id="REC1", instance_number=i))
    with caplog.at_level(logging.INFO):
        report = reconcile(core.archive, core.index)
    assert report.clean and report.indexed == report.archived == 3
    assert "index and archive agree (3 objects)" in caplog.text


def test_orphans_are_moved_aside_and_kept(core, caplog):
    stored = core.store(synth.make_instance("CT", patient_id="REC2"))
    orphan = core.archive.put_bytes(b"written, never committed").object_id  # a crash before the commit
    with caplog.at_level(logging.WARNING):
        report = reconcile(core.archive, core.index)
    assert report.orphans == [orphan] and not report.missing
    assert "1 archive object(s) had no index row" in caplog.text and orphan in caplog.text
    kept = core.root / "archive" / "orphans" / orphan  # the file archive's quarantine
    assert kept.exists() and not core.archive.exists(orphan)
    with open(kept, "rb") as fh:  # still a whole, readable object under its own name
        plain = b"".join(envelope.open_chunks(fh, kept.stat().st_size, bytes.fromhex(orphan),
                                              core.archive.keyring.archive_key, "orphan"))
    assert plain == b"written, never committed"
    assert core.archive.exists(stored.object_id)
    assert reconcile(core.archive, core.index).clean  # once moved, the next start is clean


def test_missing_objects_are_reported_loudly(core, caplog):
    gone = core.store(synth.make_instance("CT", patient_id="REC3"))
    core.store(synth.make_instance("CT", patient_id="REC3"))
    core.archive._path(gone.object_id).unlink()  # a disk fault
    with caplog.at_level(logging.WARNING):
        report = reconcile(core.archive, core.index)
    assert [(m.sop_uid, m.object_id, m.replaced) for m in report.missing] == [(gone.sop_uid, gone.object_id, False)]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "1 indexed object(s) are MISSING" in errors[0].getMessage()
    assert any(gone.sop_uid in r.getMessage() for r in errors)
    assert Instance.select().where(Instance.sop_uid == gone.sop_uid).exists(core.index.db)  # the row is kept: never silently dropped


def test_replaced_objects_count_as_indexed(core):
    ds = synth.make_instance("CT", patient_id="REC4")
    core.store(ds)
    ds.InstanceNumber = 99
    core.store(ds)  # replaces; the old object stays, named by a ReplacedObject row
    report = reconcile(core.archive, core.index)
    assert report.clean and report.indexed == report.archived == 2


def test_nothing_is_decrypted(core):
    """Reconciliation compares ids only: it works without any archive key."""
    core.store(synth.make_instance("CT", patient_id="REC5"))
    orphan = core.archive.put_bytes(b"x").object_id
    keyless = Archive(core.root / "archive", Keyring(archive_keys={}, current_archive_key="", index_key=os.urandom(32)))
    assert reconcile(keyless, core.index).orphans == [orphan]
