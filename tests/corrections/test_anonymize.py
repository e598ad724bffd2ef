"""Issue 22 items 5, 6: an anonymized copy (PS3.15 Annex E basic profile) of a study, from the CLI against a
running box; the archive is untouched, pseudonyms are consistent within one export, ultrasound is flagged
for burnt-in annotation, and the export is audited with its reason. The unit test lists what is removed."""
from __future__ import annotations

import io
import zipfile

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import synth
from helpers import Server, dcmtk, run_cli
from test_correct import _audit, _current

from appliance.corrections.anonymize import EMPTY, REMOVE, Export, anonymize

PHI = {  # keyword: value, each removed by the profile (action X)
    "InstitutionName": "GOOD HOSPITAL", "InstitutionAddress": "1 MAIN ST", "StationName": "US-ROOM-2",
    "OperatorsName": "TECH^TINA", "PerformingPhysicianName": "DOC^PERF", "OtherPatientIDs": "OLD-9",
    "PatientAddress": "2 ELM ST", "PatientAge": "056Y", "PatientWeight": "70", "PatientComments": "allergic",
    "DeviceSerialNumber": "SN123", "ProtocolName": "LIVER", "ImageComments": "left side", "SeriesDate": "20260101",
    "AcquisitionDate": "20260101", "IssuerOfPatientID": "CLINIC", "RequestingPhysician": "DOC^REQ",
}


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _phi_instance(kind="US", **kw) -> Dataset:
    ds = synth.make_instance(kind, patient_name="SECRET^SARAH", patient_id="MRN-4711", accession="ACC-77", **kw)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.add_new(0x00091010, "LO", "private vendor note")
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = [ref]
    return ds


def test_basic_profile_removes_replaces_and_remaps():
    study, series = generate_uid(), generate_uid()
    a, b = _phi_instance(study_uid=study, series_uid=series), _phi_instance(study_uid=study, series_uid=series)
    b.ReferencedImageSequence[0].ReferencedSOPInstanceUID = a.SOPInstanceUID
    export = Export()
    out_a, out_b = (pydicom.dcmread(io.BytesIO(anonymize(_part10(d), export))) for d in (a, b))

    for keyword in PHI:
        assert keyword in REMOVE and keyword not in out_a, keyword
    assert (0x0009, 0x1010) not in out_a  # private attributes removed
    for keyword in ("AccessionNumber", "StudyDate", "PatientBirthDate", "PatientSex", "ReferringPhysicianName"):
        assert keyword in EMPTY and out_a[keyword].value in ("", None), keyword
    # Pseudonyms: one per patient within the export; UIDs remapped consistently, references kept matching.
    assert out_a.PatientID == out_b.PatientID != "MRN-4711" and str(out_a.PatientName).startswith("ANON^")
    assert out_a.StudyInstanceUID == out_b.StudyInstanceUID != study and out_a.StudyInstanceUID.startswith("2.25.")
    assert out_a.SOPInstanceUID != a.SOPInstanceUID and out_a.file_meta.MediaStorageSOPInstanceUID == out_a.SOPInstanceUID
    assert out_b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_a.SOPInstanceUID
    assert out_a.SOPClassUID == a.SOPClassUID  # well-known UIDs stay
    assert out_a.PatientIdentityRemoved == "YES" and out_a.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out_a.BurnedInAnnotation == "YES" and export.burnt_in == 2 and export.warnings
    assert out_a.PixelData == a.PixelData
    # Another export of the same study: unlinkable pseudonyms and UIDs.
    again = pydicom.dcmread(io.BytesIO(anonymize(_part10(a), Export())))
    assert again.SOPInstanceUID != out_a.SOPInstanceUID
    # Nothing of the identity is left anywhere in the bytes.
    raw = anonymize(_part10(a), Export())
    for secret in (b"SECRET", b"MRN-4711", b"ACC-77", b"GOOD HOSPITAL", b"TECH^TINA", b"private vendor"):
        assert secret not in raw, secret


def test_anonymized_copy_from_the_cli(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "s", n_series=1, per_series=3, kind="US", patient_name="SECRET^SARAH",
                              patient_id="MRN-4711")
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    srv = Server(data_dir).start()
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
        before = _current(data_dir, study_uid)
        out = tmp_path / "teaching.zip"
        done = run_cli("correct", "anonymize", study_uid, "--output", out, "--reason", "teaching file",
                       "--data", data_dir)
        assert "3 anonymized instance(s)" in done.stdout and "burnt into the pixels" in done.stderr
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            blobs = [zf.read(n) for n in names]
        assert len(names) == 3 and all("SECRET" not in n and "MRN" not in n for n in names)
        copies = [pydicom.dcmread(io.BytesIO(b)) for b in blobs]
        assert len({c.PatientID for c in copies}) == 1 and len({c.StudyInstanceUID for c in copies}) == 1
        assert all(b"SECRET" not in b and b"MRN-4711" not in b for b in blobs)
        assert _current(data_dir, study_uid) == before  # the archive is untouched
        [(actor, pid, audited, detail)] = _audit(data_dir, "study.export.anonymized")
        assert actor == "cli" and pid == "MRN-4711" and audited == study_uid
        assert "reason: teaching file" in detail and "3 image(s) flagged" in detail
    finally:
        srv.stop()


def test_anonymized_copy_sent_to_a_peer(data_dir, tmp_path):
    from helpers import StoreSCP

    files = synth.write_study(tmp_path / "s", n_series=1, per_series=2, kind="CT", patient_name="SECRET^SARAH",
                              patient_id="MRN-4711")
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    scp = StoreSCP(tmp_path / "peer", ae_title="TEACHING").start()
    try:
        srv = Server(data_dir).start()
        try:
            assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
        finally:
            srv.stop()
        run_cli("modality", "add", "TEACHING", "127.0.0.1", scp.port, "--data", data_dir)
        done = run_cli("correct", "anonymize", study_uid, "--to-peer", "TEACHING", "--reason", "second opinion",
                       "--data", data_dir)
        assert "2 anonymized instance(s) sent to TEACHING" in done.stdout
        received = [pydicom.dcmread(p) for p in scp.files()]
        assert len(received) == 2 and {r.StudyInstanceUID for r in received} != {study_uid}
        assert all(r.PatientIdentityRemoved == "YES" and "SECRET" not in str(r.PatientName) for r in received)
        assert all(b"MRN-4711" not in p.read_bytes() for p in scp.files())
        [(_actor, _pid, _s, detail)] = _audit(data_dir, "study.export.anonymized.sent")
        assert "2 of 2 anonymized instance(s) sent to TEACHING" in detail
    finally:
        scp.stop()
