"""Issue 22 item 7: a kill -9 during the correction of a 500-image study leaves either the old or the new
version complete, never a mix. The correction runs as the real CLI (`pacs-appliance correct study`);
it is killed once while it is sealing the corrected objects and once after all are sealed (around the
one index transaction). Each time every image names one and the same patient, and nothing the index
names is missing.

Issue 15: the hundreds of corrected copies sealed before the kill are far more than start-up's orphan
bound, but they are named by the correction's unfinished batch (recorded before it sealed anything), so
a real `serve` start discards them and comes up clean, and `index rebuild` never indexes them."""
from __future__ import annotations

import io
import os
import signal
import subprocess

import pydicom
import pytest
from pydicom.uid import generate_uid

import synth
from helpers import CLI, Server, wait_until

from appliance import config as config_mod
from appliance.app import Parts
from appliance.index.corrections import study_objects
from appliance.index.batches import unfinished
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


def _pending(data_dir) -> dict[str, list[str]]:
    parts = _parts(data_dir)
    try:
        return unfinished(parts.index.db)
    finally:
        parts.close()


def _orphans(data_dir) -> list[str]:
    where = data_dir / "archive" / "orphans"
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def _start_up(data_dir) -> str:
    """A real `serve` start (reconciliation included) to readiness; its log."""
    server = Server(data_dir).start(timeout=120)
    try:
        return server.log()
    finally:
        assert server.stop(timeout=60) == 0, server.log()


@pytest.mark.timeout(1200)  # 1,500 objects written, two kills, two real starts: minutes on a busy box
def test_kill_during_a_500_image_correction_leaves_old_or_new_whole(data_dir):
    study_uid = _fill(data_dir)
    assert _state(data_dir, study_uid) == ({"CRASH^OLD"}, {"CRASH^OLD"}, IMAGES, True)

    # Killed halfway through sealing: the old study is whole, and the batch the correction recorded before
    # sealing names every object it was going to write, the sealed ones among them.
    rc = _correct_and_kill(data_dir, study_uid, "CRASH^MID", IMAGES + IMAGES // 2)
    assert rc == -signal.SIGKILL
    assert _state(data_dir, study_uid) == ({"CRASH^OLD"}, {"CRASH^OLD"}, IMAGES, True)
    (batch, ids), = _pending(data_dir).items()
    assert len(ids) == IMAGES and _objects_in_archive(data_dir) - IMAGES > 20  # > reconcile's orphan bound

    # Start-up: not TooManyOrphans; the half-written correction is discarded, nothing becomes an orphan.
    log = _start_up(data_dir)
    assert "interrupted correction" in log and batch in log, log
    assert _pending(data_dir) == {} and _orphans(data_dir) == [] and _objects_in_archive(data_dir) == IMAGES
    assert _state(data_dir, study_uid) == ({"CRASH^OLD"}, {"CRASH^OLD"}, IMAGES, True)

    # Killed once every corrected object is sealed (in or around the one transaction): old or new, whole.
    _correct_and_kill(data_dir, study_uid, "CRASH^NEW", 2 * IMAGES)
    indexed, held, count, present = _state(data_dir, study_uid)
    assert count == IMAGES and present and indexed == held and held in ({"CRASH^OLD"}, {"CRASH^NEW"})
    _start_up(data_dir)
    assert _pending(data_dir) == {} and _orphans(data_dir) == []
    assert _state(data_dir, study_uid) == (indexed, held, IMAGES, True)

    # And the correction, run again to the end, gives the new version whole.
    done = subprocess.run(CLI + ["correct", "study", study_uid, "--patient-name", "CRASH^DONE", "--reason",
                                 "after the crash", "--data", str(data_dir)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert _state(data_dir, study_uid) == ({"CRASH^DONE"}, {"CRASH^DONE"}, IMAGES, True)
    assert _pending(data_dir) == {}


@pytest.mark.timeout(1200)
def test_a_rebuild_after_a_kill_mid_correction_never_indexes_the_half_written_copies(data_dir):
    study_uid = _fill(data_dir)
    assert _correct_and_kill(data_dir, study_uid, "CRASH^HALF", IMAGES + IMAGES // 2) == -signal.SIGKILL
    assert len(_pending(data_dir)) == 1

    rebuilt = subprocess.run(CLI + ["index", "rebuild", "--data", str(data_dir)], capture_output=True, text=True,
                             timeout=900)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _pending(data_dir) == {} and _objects_in_archive(data_dir) == IMAGES
    assert _state(data_dir, study_uid) == ({"CRASH^OLD"}, {"CRASH^OLD"}, IMAGES, True)
