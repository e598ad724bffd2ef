"""Issue 22 item 3: a study that arrived without a worklist entry (an ultrasound machine without one, a typed
patient) gets a scheduled step applied: its patient, accession and procedure, as an audited correction."""
from __future__ import annotations

import re

import pydicom

import synth
from helpers import Server, dcmtk, run_cli
from test_correct import _audit, _find


def test_apply_worklist_entry_to_a_study(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "s", n_series=1, per_series=2, kind="US", patient_name="TYPED^BYHAND",
                              patient_id="TMP-1")
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    added = run_cli("worklist", "add", "--patient-name", "REAL^PATIENT", "--patient-id", "MRN-9", "--birth-date",
                    "19750505", "--sex", "F", "--accession", "ACC-42", "--procedure", "ABDOMEN US", "--modality", "US",
                    "--referring", "DOC^REF", "--data", data_dir).stdout
    item_id = re.search(r"entry (\d+)", added).group(1)
    srv = Server(data_dir).start()
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
        out = run_cli("correct", "apply-worklist", study_uid, item_id, "--reason", "no worklist at the machine",
                      "--data", data_dir).stdout
        assert "study.worklist: 2 instance(s)" in out
        [hit] = _find(srv, tmp_path, StudyInstanceUID=study_uid, PatientID=None, PatientName=None,
                      PatientBirthDate=None, PatientSex=None, AccessionNumber=None, StudyDescription=None,
                      ReferringPhysicianName=None)
        assert (hit.PatientID, str(hit.PatientName), hit.PatientBirthDate, hit.PatientSex, hit.AccessionNumber,
                hit.StudyDescription, str(hit.ReferringPhysicianName)) == (
            "MRN-9", "REAL^PATIENT", "19750505", "F", "ACC-42", "ABDOMEN US", "DOC^REF")
        [(_actor, pid, _s, detail)] = _audit(data_dir, "study.worklist")
        assert pid == "MRN-9" and "PatientID: 'TMP-1' -> 'MRN-9'" in detail and "no worklist" in detail
        again = run_cli("correct", "apply-worklist", study_uid, item_id, "--reason", "twice", "--data", data_dir,
                        check=False)
        assert again.returncode != 0 and "already carries" in again.stderr
    finally:
        srv.stop()
