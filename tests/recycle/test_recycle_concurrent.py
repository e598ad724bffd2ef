"""Recycling while images arrive and backups run, for a few seconds: nothing stored is lost, nothing not
offsite is deleted, and the index, the archive and the offsite copy still agree afterwards."""
from __future__ import annotations

import os
import threading
import traceback
import time

from recyclekit import MiB, make_recycle_box

from appliance.backup import manifest as mf
from appliance.errors import DiskFull
from appliance.index.reconcile import reconcile

SECONDS = float(os.environ.get("PACS_RECYCLE_SOAK_SECONDS", "6"))  # longer by hand: a soak


def test_recycling_under_ingest_and_backup(tmp_path):
    box = make_recycle_box(tmp_path, recycle_free_below_mb=3, recycle_target_free_mb=3, recycle_min_age_days=0)
    app = box.app
    app.index.start()  # the real single writer thread: ingest, backup and recycling all submit to it
    box.capacity = 4 * MiB  # fills (and so recycles) after about a dozen studies
    stored: dict[str, set[str]] = {}  # study UID -> SOP Instance UIDs acknowledged
    stop = threading.Event()
    errors: list[BaseException] = []
    runs = {"backup": 0, "recycle": 0, "recycled": 0, "refused": 0}

    def ingest():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                uid = box.add_study(f"S{n}", n=2, patient_id=f"CC{n % 5}")
            except DiskFull:  # the reserve held while recycling catches up: what a modality sees as 0xA700
                runs["refused"] += 1
                stop.wait(0.1)
                continue
            rows = app.index.db.execute_sql(
                "SELECT i.sop_uid FROM instance i JOIN series se ON se.id = i.series_id JOIN study s "
                "ON s.id = se.study_id WHERE s.study_uid = ?", (uid,)).fetchall()
            stored[uid] = {r[0] for r in rows}

    def backups():
        while not stop.is_set():
            app.backup.run(trigger="test")
            runs["backup"] += 1
            time.sleep(0.3)

    def recycling():
        while not stop.wait(0.2):
            runs["recycled"] += len(app.recycler.run(trigger="test").recycled)
            runs["recycle"] += 1

    def guard(fn):
        def wrapped():
            try:
                fn()
            except BaseException:  # noqa: BLE001 - reported by the test
                errors.append(traceback.format_exc())
                stop.set()
        return wrapped

    threads = [threading.Thread(target=guard(f)) for f in (ingest, backups, recycling)]
    try:
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors, "\n".join(errors)
        assert runs["recycled"] >= 3 and runs["backup"] >= 2, runs
        print(f"recycling soak: {SECONDS:.0f} s, {len(stored)} studies stored, {runs}")

        db = app.index.db
        # Counts: every study, series and patient row agrees with the rows below it.
        assert not db.execute_sql(
            "SELECT s.id FROM study s WHERE s.num_instances != (SELECT count(*) FROM instance i JOIN series se "
            "ON se.id = i.series_id WHERE se.study_id = s.id) OR s.num_series != (SELECT count(*) FROM series "
            "WHERE study_id = s.id)").fetchall()
        assert not db.execute_sql(
            "SELECT p.id FROM patient p WHERE p.num_studies != (SELECT count(*) FROM study WHERE patient_id = p.id) "
            "OR p.num_instances != (SELECT coalesce(sum(num_instances), 0) FROM study WHERE patient_id = p.id) "
            "OR p.num_instances <= 0").fetchall()
        # Every acknowledged instance is on the box, or recycled with its only copy offsite.
        live = {r[0] for r in db.execute_sql("SELECT sop_uid FROM instance").fetchall()}
        recycled = dict(db.execute_sql("SELECT sop_uid, object_id FROM recycled_object").fetchall())
        for uid, sops in stored.items():
            for sop in sops:
                assert sop in live or sop in recycled, (uid, sop)
        for sop, oid in recycled.items():
            assert (box.nas / mf.object_name(oid)).exists() and app.backup.is_offsite(oid)
            assert not app.archive.exists(oid)
        report = reconcile(app.archive, app.index)
        assert report.clean, report
        assert app.audit.verify().ok
        app.audit.flush()
        assert len(list(app.audit.query(action="storage.recycle", limit=None))) == \
            db.execute_sql("SELECT count(*) FROM recycled_study").fetchone()[0]
    finally:
        stop.set()
        app.index.close()
