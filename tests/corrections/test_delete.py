"""Issue 22 items 4, 6, 7: delete a series and a study (with a reason) into the recycle bin - gone from
C-FIND, QIDO and WADO at once - restore them byte for byte, purge after the bin's days; a correction and
a deletion survive a backup and a disaster restore onto a fresh box. Real processes: `pacs-appliance
serve`, the CLI, dcmtk findscu, HTTP DICOMweb."""
from __future__ import annotations

import json

import pydicom
import requests

import synth
from helpers import Server, dcmtk, run_cli
from test_correct import AUTH, _audit, _current, _find, _qido


def _bin(data_dir, env=None):
    return json.loads(run_cli("correct", "bin", "--json", "--data", data_dir, env=env).stdout)


def _wado(srv, study_uid, series_uid=None):
    path = f"studies/{study_uid}" + (f"/series/{series_uid}" if series_uid else "")
    return requests.get(f"{srv.url}/dicomweb/{path}", auth=AUTH, timeout=60,
                        headers={"Accept": 'multipart/related; type="application/dicom"'}).status_code


def test_delete_restore_purge(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "s", n_series=2, per_series=2, patient_id="DEL-1", patient_name="DEL^ME")
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    srv = Server(data_dir).start()
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
        received = _current(data_dir, study_uid)

        no_reason = run_cli("correct", "delete", "series", series_uid, "--reason", "", "--data", data_dir,
                            check=False)
        assert no_reason.returncode != 0 and "a reason is required" in no_reason.stderr

        out = run_cli("correct", "delete", "series", series_uid, "--reason", "test image", "--data", data_dir)
        assert "2 instance(s) moved to the recycle bin" in out.stdout
        assert len(_qido(srv, f"studies/{study_uid}/series")) == 1
        assert _find(srv, tmp_path, level="SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid) == []
        assert _wado(srv, study_uid, series_uid) == 404

        run_cli("correct", "delete", "study", study_uid, "--reason", "sent to the wrong box", "--data", data_dir)
        assert _qido(srv, StudyInstanceUID=study_uid) == [] and _wado(srv, study_uid) == 404
        assert _find(srv, tmp_path, StudyInstanceUID=study_uid) == []
        entries = _bin(data_dir)
        assert {(e["level"], e["uid"], e["instances"]) for e in entries} == {("series", series_uid, 2),
                                                                          ("study", study_uid, 2)}
        [(actor, pid, audited, detail)] = _audit(data_dir, "study.delete")
        assert actor == "cli" and pid == "DEL-1" and audited == study_uid and "reason: sent to the wrong box" in detail
        assert "reason: test image" in _audit(data_dir, "series.delete")[0][3]
    finally:
        srv.stop()

    # A restart: binned objects are neither orphans nor missing (reconciliation is clean).
    srv = Server(data_dir).start()
    try:
        assert "orphan" not in srv.log().lower()
        for e in _bin(data_dir):
            run_cli("correct", "bin", "--restore", e["batch"], "--data", data_dir)
        assert _current(data_dir, study_uid) == received  # the same objects, byte for byte
        [hit] = _find(srv, tmp_path, StudyInstanceUID=study_uid, NumberOfStudyRelatedInstances=None,
                      NumberOfStudyRelatedSeries=None)
        assert (hit.NumberOfStudyRelatedInstances, hit.NumberOfStudyRelatedSeries) == (4, 2)
        assert _wado(srv, study_uid, series_uid) == 200 and _bin(data_dir) == []
        assert len(_audit(data_dir, "study.restore")) == 1 and len(_audit(data_dir, "series.restore")) == 1
    finally:
        srv.stop()

    # With no days in the bin, a purge deletes the objects: nothing left to restore.
    zero = {"PACS_STORAGE_RECYCLE_BIN_DAYS": "0"}
    run_cli("correct", "delete", "study", study_uid, "--reason", "really", "--data", data_dir, env=zero)
    [entry] = _bin(data_dir)
    assert "4 object(s) purged" in run_cli("correct", "bin", "--purge", "--data", data_dir).stdout
    assert _bin(data_dir) == []
    gone = run_cli("correct", "bin", "--restore", entry["batch"], "--data", data_dir, check=False)
    assert gone.returncode != 0 and "no deletion" in gone.stderr
    assert len(_audit(data_dir, "bin.purge")) == 1


def test_correction_and_deletion_survive_backup_and_restore(data_dir, tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    env = {"PACS_BACKUP_TARGET": f"file://{nas}"}
    kept = synth.write_study(tmp_path / "a", n_series=1, per_series=2, patient_id="BK-1", patient_name="TYPO^NAME")
    binned = synth.write_study(tmp_path / "b", n_series=1, per_series=2, patient_id="BK-2")
    kept_uid, binned_uid = (pydicom.dcmread(f[0]).StudyInstanceUID for f in (kept, binned))
    srv = Server(data_dir, env=env).start()
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *kept, *binned).returncode == 0
    finally:
        srv.stop()
    run_cli("correct", "study", kept_uid, "--patient-name", "RIGHT^NAME", "--reason", "typo", "--data", data_dir)
    run_cli("correct", "delete", "study", binned_uid, "--reason", "test study", "--data", data_dir)
    run_cli("backup", "run", "--data", data_dir, env=env)
    (tmp_path / "key").write_text(run_cli("keys", "export-recovery", "--data", data_dir).stdout)
    new_box = tmp_path / "new-box"
    out = run_cli("backup", "restore", "--target", str(nas), "--recovery-key-file", tmp_path / "key",
                  "--data", new_box)
    assert "restored 6 of 6 objects" in out.stdout  # 2 corrected + 2 original versions + 2 in the bin

    srv = Server(new_box).start()
    try:
        [hit] = _find(srv, tmp_path, PatientID="*", PatientName=None, StudyInstanceUID=None)
        assert (hit.StudyInstanceUID, str(hit.PatientName)) == (kept_uid, "RIGHT^NAME")
        versions = json.loads(run_cli("storage", "versions", "--json", "--data", new_box).stdout)
        assert len(versions) == 2 and {v["patient_id"] for v in versions} == {"BK-1"}  # originals recoverable
        [entry] = _bin(new_box)
        run_cli("correct", "bin", "--restore", entry["batch"], "--data", new_box)
        assert len(_qido(srv, PatientID="BK-2")) == 1
    finally:
        srv.stop()
