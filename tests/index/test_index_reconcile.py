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


# -- a big box: reconciliation in the background, beside live writes (Reconciler) -------------------------

def written_earlier(core, object_ids) -> None:
    """Date objects an hour back, as leftovers of an earlier run are (the file clock ticks coarsely: an object
    written a moment before the start can share its tick, and a tie never counts as "before")."""
    for oid in object_ids:
        path = core.archive._path(oid)
        then = path.stat().st_mtime - 3600
        os.utime(path, (then, then))


def background(core, **kw):
    from appliance.index.reconcile import Reconciler

    failures = []
    r = Reconciler(core.archive, core.index, on_failure=failures.append, background_above=0, **kw)
    assert r.run_now() is None and r.background  # nothing yet: it runs once started
    return r, failures


def test_background_reconciliation_judges_only_what_was_there_before_the_start(core, monkeypatch):
    """Objects written after the start are live writes (their rows may not be committed yet), never orphans;
    what was wrong before the start is found and handled as a start-up run would. More ids than one page."""
    from appliance.index import objects as objects_mod

    monkeypatch.setattr(objects_mod, "PAGE", 3)
    stored = [core.store(synth.make_instance("CT", patient_id="BG1", instance_number=i)) for i in range(8)]
    old_orphans = sorted(core.archive.put_bytes(f"crashed write {i}".encode()).object_id for i in range(3))
    written_earlier(core, old_orphans)
    os.unlink(core.archive._path(stored[4].object_id))  # lost before the start
    r, failures = background(core)
    in_flight = core.archive.put_bytes(b"written after the start, its row not committed yet").object_id
    late = core.store(synth.make_instance("CT", patient_id="BG1", instance_number=99))  # a whole new store
    r.start()
    assert r.done.wait(60)
    r.stop()
    assert not failures and r.report.orphans == old_orphans
    assert [m.object_id for m in r.report.missing] == [stored[4].object_id]
    assert core.archive.exists(in_flight) and core.archive.exists(late.object_id)
    assert all((core.root / "archive" / "orphans" / oid).exists() for oid in old_orphans)


def test_background_reconciliation_rechecks_before_acting(core, monkeypatch):
    """The merge reads the index in pages while writes go on: a row deleted (with its object) after its page
    was read is not reported missing, and an object whose row was committed after its page was read is not
    an orphan."""
    from appliance.index.reconcile import ReconcileReport, _merge

    a = core.store(synth.make_instance("CT", patient_id="BG2", instance_number=1))
    b = core.store(synth.make_instance("CT", patient_id="BG2", instance_number=2))
    stale = list(core.index.objects.named())  # the pages as the merge read them ...
    c = core.store(synth.make_instance("CT", patient_id="BG2", instance_number=3))  # ... then a store commits
    Instance.delete().where(Instance.object_id == b.object_id).execute(core.index.db)  # and b is deleted
    os.unlink(core.archive._path(b.object_id))
    monkeypatch.setattr(core.index.objects, "named", lambda: iter(stale))
    seen = ReconcileReport()
    assert _merge(iter(stale), iter(core.archive.list_ids()), seen) == [c.object_id]  # what a stale merge sees
    assert [m.object_id for m in seen.missing] == [b.object_id]
    report = reconcile(core.archive, core.index, written_before=core.archive.clock())
    assert not report.orphans and not report.missing
    assert core.archive.exists(c.object_id) and core.archive.exists(a.object_id)


def test_background_reconciliation_stops_on_a_mass_of_orphans(core):
    """An old index over a newer archive found in the background: the appliance is told to stop (exit 7),
    and nothing is moved."""
    from appliance.index.reconcile import TooManyOrphans

    core.store(synth.make_instance("CT", patient_id="BG3"))
    many = [core.archive.put_bytes(f"unindexed {i}".encode()).object_id for i in range(25)]
    written_earlier(core, many)
    r, failures = background(core)
    r.start()
    assert r.done.wait(60)
    assert len(failures) == 1 and isinstance(failures[0], TooManyOrphans) and failures[0].exit_code == 7
    assert all(core.archive.exists(oid) for oid in many)


def test_background_reconciliation_stopped_moves_nothing(core):
    core.store(synth.make_instance("CT", patient_id="BG4"))
    orphan = core.archive.put_bytes(b"crashed write").object_id
    written_earlier(core, [orphan])
    r, failures = background(core)
    r._stop.set()  # the appliance stops before the merge got anywhere
    r.start()
    assert r.done.wait(60)
    assert r.report is None and not failures and core.archive.exists(orphan)


def test_small_box_reconciles_before_the_node_listens(core):
    from appliance.index.reconcile import Reconciler

    core.store(synth.make_instance("CT", patient_id="BG5"))
    r = Reconciler(core.archive, core.index, on_failure=lambda exc: None)
    assert not r.background and core.index.objects.estimate() == 1
    assert r.run_now().clean and r.done.is_set()


def test_serve_raises_what_a_background_part_failed_with():
    """serve() stops the appliance and raises the failure (the CLI turns TooManyOrphans into exit 7)."""
    import threading

    import pytest

    from appliance.app import serve
    from appliance.index.reconcile import TooManyOrphans

    calls = []

    class App:
        failure = None

        def start(self):
            calls.append("start")
            threading.Timer(0.2, lambda: setattr(self, "failure", TooManyOrphans("an old index"))).start()

        def stop(self):
            calls.append("stop")

    with pytest.raises(TooManyOrphans):
        serve(App(), threading.Event())
    assert calls == ["start", "stop"]
