"""Issue 22 items 1, 2, 6: correct a study's patient and study attributes, move a study to another
patient, merge two patients, move and split a series - each through the CLI against a running
`pacs-appliance serve`, checked with dcmtk findscu (C-FIND), QIDO-RS and WADO-RS retrieval; the
original bytes stay recoverable as replaced versions; every operation is audited with the reason.
"""
from __future__ import annotations

import hashlib
import io
import json

import pydicom
import requests

import synth
from helpers import ADMIN_PASSWORD, Server, dcmtk, run_cli

AUTH = ("admin", ADMIN_PASSWORD)


def _audit(data_dir, action):
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.records.audit import AuditLog

    cfg = load(data_dir, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return [(e.actor, e.patient_id, e.study_uid, e.detail)
                for e in AuditLog(index).query(action=action, newest_first=False, limit=None)]
    finally:
        index.close()


def _current(data_dir, study_uid):
    """{SOP Instance UID: sha256 of the stored object} of a study's current instances."""
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.index.corrections import study_objects

    cfg = load(data_dir, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return {o.sop_uid: o.sha256 for o in study_objects(index.db, study_uid)}
    finally:
        index.close()


def _archived(data_dir, object_ids):
    """The stored bytes of these archive objects (read with the box's own keys)."""
    from appliance.archive import Archive, KeyStore
    from appliance.config import load

    cfg = load(data_dir, env={})
    archive = Archive(cfg.archive_dir, KeyStore(cfg.keys_dir).load())
    return {oid: archive.read(oid) for oid in object_ids}


def _find(srv, tmp_path, level="STUDY", **keys):
    out = tmp_path / f"find-{len(list(tmp_path.glob('find-*')))}"
    out.mkdir()
    args = ["-S", "-X", "-od", out, "-aec", "PACSBOX", "-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value is not None else key]
    done = dcmtk("findscu", *args, "127.0.0.1", srv.dicom_port)
    assert done.returncode == 0 and "E: " not in done.stderr, done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _qido(srv, path="studies", **params):
    r = requests.get(f"{srv.url}/dicomweb/{path}", params=params, auth=AUTH, timeout=30,
                     headers={"Accept": "application/dicom+json"})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else []


def _retrieve(srv, study_uid):
    """Every instance of the study through WADO-RS (multipart), as pydicom datasets."""
    r = requests.get(f"{srv.url}/dicomweb/studies/{study_uid}", auth=AUTH, timeout=60,
                     headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200, r.text
    boundary = r.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = []
    for chunk in r.content.split(b"--" + boundary)[1:-1]:
        body = chunk.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        parts.append(pydicom.dcmread(io.BytesIO(body)))
    return parts


def _send(srv, paths):
    done = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *paths)
    assert done.returncode == 0, done.stderr


def test_correct_move_merge_split(data_dir, tmp_path):
    wrong = synth.write_study(tmp_path / "wrong", n_series=2, per_series=3, patient_name="WRONG^NAME",
                              patient_id="PAT-W", accession="ACC1", study_description="CHEST")
    right = synth.write_study(tmp_path / "right", n_series=1, per_series=2, patient_name="RIGHT^PERSON",
                              patient_id="PAT-R", birth_date="19800202", sex="F")
    originals = {pydicom.dcmread(p).SOPInstanceUID for p in wrong}
    study_uid = pydicom.dcmread(wrong[0]).StudyInstanceUID
    right_study = pydicom.dcmread(right[0]).StudyInstanceUID

    srv = Server(data_dir).start()
    try:
        _send(srv, wrong + right)
        received = _current(data_dir, study_uid)

        # 1. A typo in the name and a missing referring physician: corrected from the CLI.
        out = run_cli("correct", "study", study_uid, "--patient-name", "WRONG^NAMED", "--description", "CHEST PA",
                      "--referring", "DOC^GOOD", "--reason", "typo at the console", "--data", data_dir).stdout
        assert "study.correct: 6 instance(s)" in out
        [hit] = _find(srv, tmp_path, StudyInstanceUID=study_uid, PatientName=None, StudyDescription=None,
                      ReferringPhysicianName=None)
        assert (str(hit.PatientName), hit.StudyDescription, str(hit.ReferringPhysicianName)) == (
            "WRONG^NAMED", "CHEST PA", "DOC^GOOD")
        assert _find(srv, tmp_path, PatientName="WRONG^NAME", StudyInstanceUID=None) == []
        images = _retrieve(srv, study_uid)
        assert len(images) == 6 and {str(d.PatientName) for d in images} == {"WRONG^NAMED"}
        assert {d.SOPInstanceUID for d in images} == set(originals)  # UIDs kept
        item = images[0].OriginalAttributesSequence[-1]  # the history travels with the object
        assert item.ReasonForTheAttributeModification == "CORRECT"
        assert str(item.ModifiedAttributesSequence[0].PatientName) == "WRONG^NAME"

        # The original bytes are recoverable: every one is a replaced version, byte for byte.
        versions = json.loads(run_cli("storage", "versions", "--json", "--data", data_dir).stdout)
        assert {v["sop_uid"] for v in versions} == set(originals)
        stored = _archived(data_dir, [v["object_id"] for v in versions])
        for v in versions:  # exactly what was received, and it reads back as the original
            assert hashlib.sha256(stored[v["object_id"]]).hexdigest() == received[v["sop_uid"]] == v["sha256"]
            assert str(pydicom.dcmread(io.BytesIO(stored[v["object_id"]])).PatientName) == "WRONG^NAME"

        [(actor, pid, audited_study, detail)] = _audit(data_dir, "study.correct")
        assert actor == "cli" and pid == "PAT-W" and audited_study == study_uid
        assert "reason: typo at the console" in detail and "PatientName: 'WRONG^NAME' -> 'WRONG^NAMED'" in detail

        # 2. It was the wrong patient altogether: move the study to PAT-R.
        run_cli("correct", "move-study", study_uid, "--to-patient", "PAT-R", "--reason", "wrong patient picked",
                "--data", data_dir)
        [hit] = _find(srv, tmp_path, StudyInstanceUID=study_uid, PatientID=None, PatientName=None,
                      PatientBirthDate=None, PatientSex=None)
        assert (hit.PatientID, str(hit.PatientName), hit.PatientBirthDate, hit.PatientSex) == (
            "PAT-R", "RIGHT^PERSON", "19800202", "F")
        assert {s["0020000D"]["Value"][0] for s in _qido(srv, PatientID="PAT-R")} == {study_uid, right_study}
        assert _qido(srv, PatientID="PAT-W") == []
        [(_a, pid, _s, detail)] = _audit(data_dir, "study.move")
        assert pid == "PAT-R" and "PatientID: 'PAT-W' -> 'PAT-R'" in detail and "wrong patient picked" in detail

        # Split one series off into a study of its own, then move it back.
        series_uid = pydicom.dcmread(wrong[0]).SeriesInstanceUID
        out = run_cli("correct", "move-series", series_uid, "--new-study", "--reason", "sent under the wrong study",
                      "--data", data_dir).stdout
        new_study = out.split(" -> ")[1].split()[0]
        assert {s["0020000E"]["Value"][0] for s in _qido(srv, f"studies/{new_study}/series")} == {series_uid}
        assert len(_qido(srv, f"studies/{study_uid}/series")) == 1
        assert {d.StudyInstanceUID for d in _retrieve(srv, new_study)} == {new_study}
        run_cli("correct", "move-series", series_uid, "--to-study", study_uid, "--reason", "back again",
                "--data", data_dir)
        assert len(_qido(srv, f"studies/{study_uid}/series")) == 2 and _qido(srv, f"studies/{new_study}/series") == []
        assert len(_audit(data_dir, "series.split")) == 1 and len(_audit(data_dir, "series.move")) == 1

        # Merge: PAT-R and a duplicate record PAT-R2 are one person.
        dup = synth.write_study(tmp_path / "dup", n_series=1, per_series=1, patient_name="RIGHT^PERSON",
                                patient_id="PAT-R2")
        _send(srv, dup)
        run_cli("correct", "merge-patients", "PAT-R2", "PAT-R", "--reason", "duplicate record", "--data", data_dir)
        assert _qido(srv, PatientID="PAT-R2") == []
        assert len(_qido(srv, PatientID="PAT-R")) == 3
        assert len(_audit(data_dir, "patient.merge")) == 1

        # Refusals are specific and change nothing.
        bad = run_cli("correct", "study", study_uid, "--birth-date", "1980-13-45", "--reason", "x", "--data",
                      data_dir, check=False)
        assert bad.returncode != 0 and "PatientBirthDate: a date" in bad.stderr
        noreason = run_cli("correct", "study", study_uid, "--sex", "M", "--reason", " ", "--data", data_dir,
                           check=False)
        assert noreason.returncode != 0 and "a reason is required" in noreason.stderr
        assert "WRONG^NAME" not in srv.log() and "PAT-W" not in srv.log()  # logs carry UIDs only
    finally:
        srv.stop()
