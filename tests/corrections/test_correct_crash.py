"""Issue 22 item 7: a kill -9 during the correction of a 500-image study leaves either the old or the new
version complete, never a mix. The correction runs as the real CLI (`pacs-appliance correct study`);
it is killed once while it is sealing the corrected objects and once after all are sealed (around the
one index transaction). Each time every image names one and the same patient, and nothing the index
names is missing: the corrected objects sealed before the kill are only orphans."""
from __future__ import annotations

import io
import os
import signal
import subprocess

import pydicom
from pydicom.uid import generate_uid

import synth
from helpers import CLI, wait_until

from appliance import config as config_mod
from appliance.app import Parts
from appliance.index.corrections import study_objects
from appliance.index.reconcile import reconcile

IMAGES = 500


def _parts(data_dir) -> Parts:
    return Parts(config_mod.load(data_dir, env={}))


def _fill(data_dir) -> str:
    """One study of IMAGES images for patient CRASH^OLD, stored through the ingest path."""
    from appliance.ingest import Origin

    parts = _parts(data_dir)
    study_uid, series_uid = generate_uid(), generate_uid()
    try:
        for n in range(IMAGES):
            ds = synth.make_instance("CT", patient_name="CRASH^OLD", patient_id="CRASH-1", study_uid=study_uid,
                                     series_uid=series_uid, instance_number=n + 1)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            parts.ingestor.store_bytes(buf.getvalue(), Origin("import", "test"))
    finally:
        parts.close()
    return study_uid


def _state(data_dir, study_uid):
    """(patient names the index shows, names the current objects hold, count, index names nothing missing)."""
    parts = _parts(data_dir)
    try:
        objects = study_objects(parts.index.db, study_uid)
        held = {str(pydicom.dcmread(io.BytesIO(parts.archive.read(o.object_id)), stop_before_pixels=True)
                    .PatientName) for o in objects}
        indexed = {r[0] for r in parts.index.db.execute_sql(
            'SELECT p."name" FROM "patient" p JOIN "study" st ON st."patient_id" = p."id" WHERE st."study_uid" = ?',
            (study_uid,)).fetchall()}
        return indexed, held, len(objects), all(parts.archive.exists(o.object_id) for o in objects)
    finally:
        parts.close()


def _objects_in_archive(data_dir) -> int:
    parts = _parts(data_dir)
    try:
        return sum(1 for _ in parts.archive.list_ids())
    finally:
        parts.close()


def _correct_and_kill(data_dir, study_uid, name, kill_at_objects):
    proc = subprocess.Popen(CLI + ["correct", "study", study_uid, "--patient-name", name, "--reason", "crash test",
                                   "--data", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proc.poll() is not None or _objects_in_archive(data_dir) >= kill_at_objects,
                   timeout=300, interval=0.02, what="the correction to seal objects")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    return proc.returncode


def test_kill_during_a_500_image_correction_leaves_old_or_new_whole(data_dir):
    study_uid = _fill(data_dir)
    assert _state(data_dir, study_uid) == ({"CRASH^OLD"}, {"CRASH^OLD"}, IMAGES, True)

    # Killed halfway through sealing: the old study is whole.
    rc = _correct_and_kill(data_dir, study_uid, "CRASH^MID", IMAGES + IMAGES // 2)
    assert rc == -signal.SIGKILL
    assert _state(data_dir, study_uid) == ({"CRASH^OLD"}, {"CRASH^OLD"}, IMAGES, True)

    # Killed once every corrected object is sealed (in or around the one transaction): old or new, whole.
    before = _objects_in_archive(data_dir)
    _correct_and_kill(data_dir, study_uid, "CRASH^NEW", before + IMAGES)
    indexed, held, count, present = _state(data_dir, study_uid)
    assert count == IMAGES and present and indexed == held and held in ({"CRASH^OLD"}, {"CRASH^NEW"})

    # Start-up reconciliation: the kills left only unindexed objects (orphans, moved aside), nothing missing.
    parts = _parts(data_dir)
    try:
        report = reconcile(parts.archive, parts.index)
        assert not report.missing and report.orphans
    finally:
        parts.close()

    # And the correction, run again to the end, gives the new version whole.
    done = subprocess.run(CLI + ["correct", "study", study_uid, "--patient-name", "CRASH^DONE", "--reason",
                                 "after the crash", "--data", str(data_dir)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert _state(data_dir, study_uid) == ({"CRASH^DONE"}, {"CRASH^DONE"}, IMAGES, True)
