"""`pacs-appliance index migrate --to URL`: a box on the SQLCipher index moves to a real PostgreSQL server.

Runs in the PostgreSQL pass (PACS_TEST_INDEX=postgresql, tests/pg_cluster.py); the box itself is made on
the embedded index first, as every box in the field was. A real `serve` process and dcmtk answer the
queries before and after.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pydicom
import pytest
import requests
import synth
from helpers import ADMIN_PASSWORD, CLI, Server, dcmtk, run_cli

from appliance import config as config_mod

SCU = "MIGSCU"
LEVELS = {
    "PATIENT": ["-P", "-k", "PatientID=*", "-k", "PatientName", "-k", "PatientBirthDate",
                "-k", "NumberOfPatientRelatedStudies", "-k", "NumberOfPatientRelatedInstances"],
    "STUDY": ["-S", "-k", "PatientID=*", "-k", "PatientName", "-k", "StudyInstanceUID", "-k", "StudyDate",
              "-k", "AccessionNumber", "-k", "ModalitiesInStudy", "-k", "NumberOfStudyRelatedSeries",
              "-k", "NumberOfStudyRelatedInstances", "-k", "StudyDescription"],
    "SERIES": ["-S", "-k", "StudyInstanceUID={study}", "-k", "SeriesInstanceUID", "-k", "Modality",
               "-k", "SeriesNumber", "-k", "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["-S", "-k", "StudyInstanceUID={study}", "-k", "SeriesInstanceUID", "-k", "SOPInstanceUID",
              "-k", "SOPClassUID", "-k", "InstanceNumber"],
}


@pytest.fixture
def sqlite_box(tmp_path, pg_cluster):
    if pg_cluster is None:
        pytest.skip("needs the PostgreSQL cluster (PACS_TEST_INDEX=postgresql)")
    data = tmp_path / "box"
    pw = tmp_path / "pw"
    pw.write_text(ADMIN_PASSWORD)
    env = {k: v for k, v in os.environ.items() if k != "PACS_INDEX_URL"}
    subprocess.run(CLI + ["init", "--data", str(data), "--admin-password-file", str(pw)], check=True,
                   capture_output=True, env=env, timeout=120)
    assert config_mod.load(data, env={}).index.url == ""
    return data


def _find(server, tmp, level: str, study: str = "") -> list[str]:
    out = Path(tempfile.mkdtemp(dir=tmp))
    keys = [a.format(study=study) for a in LEVELS[level]]
    found = dcmtk("findscu", *keys[:1], "-X", "-od", out, "-aet", SCU, "-aec", "PACSBOX",
                  "-k", f"QueryRetrieveLevel={level}", *keys[1:], "127.0.0.1", server.dicom_port)
    assert found.returncode == 0, found.stderr
    return sorted(repr(sorted((str(e.tag), str(e.value)) for e in pydicom.dcmread(p))) for p in out.iterdir())


def _worklist(server, tmp) -> list[str]:
    out = Path(tempfile.mkdtemp(dir=tmp))
    found = dcmtk("findscu", "-W", "-X", "-od", out, "-aet", SCU, "-aec", "PACSBOX", "-k", "PatientName",
                  "-k", "PatientID", "-k", "AccessionNumber",
                  "-k", "ScheduledProcedureStepSequence[0].Modality", "127.0.0.1", server.dicom_port)
    assert found.returncode == 0, found.stderr
    return sorted(repr(sorted((str(e.tag), str(e.value)) for e in pydicom.dcmread(p))) for p in out.iterdir())


def _web(server) -> tuple[list[str], list]:
    s = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(server.url + "/login", timeout=30).text).group(1)
    s.post(server.url + "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token},
           timeout=30)
    page = s.get(server.url + "/studies", timeout=30)
    assert page.status_code == 200
    qido = s.get(server.url + "/dicomweb/studies", timeout=30)
    assert qido.status_code == 200
    listed = sorted(set(re.findall(r"/studies/([0-9.]+)", page.text)))
    # Everything but the Retrieve URL (0008,1190), which names the server's port (a new one each start).
    found = [{tag: v for tag, v in d.items() if tag != "00081190"} for d in qido.json()]
    return listed, sorted(found, key=lambda d: d["0020000D"]["Value"][0])


def _answers(server, tmp, studies) -> dict:
    return {
        "patient": _find(server, tmp, "PATIENT"),
        "study": _find(server, tmp, "STUDY"),
        "series": [_find(server, tmp, "SERIES", s) for s in studies],
        "image": [_find(server, tmp, "IMAGE", s) for s in studies],
        "worklist": _worklist(server, tmp),
        "web": _web(server),
    }


def _audit(data_dir):
    from appliance.app import Parts
    from appliance.records.audit import AuditLog

    parts = Parts(config_mod.load(data_dir, env={}))
    try:
        log = AuditLog(parts.index)
        return log.verify(), [e.action for e in parts.index.audit.entries(limit=None, newest_first=False)]
    finally:
        parts.close()


def test_a_box_with_studies_users_peers_and_worklist_migrates(sqlite_box, tmp_path, pg_cluster):
    data = sqlite_box
    run_cli("modality", "add", SCU, "127.0.0.1", "104", "--data", data)
    pw = tmp_path / "clin.pw"
    pw.write_text("a-long-clinician-password-1")
    run_cli("user", "add", "drmig", "--role", "clinician", "--password-file", pw, "--data", data)
    run_cli("worklist", "add", "--patient-name", "WORK^LIST", "--patient-id", "WL1", "--modality", "US",
            "--accession", "ACC-WL1", "--data", data)
    files = (synth.write_study(tmp_path / "s1", n_series=2, per_series=2, patient_id="MIG1",
                               patient_name="MÜLLER^ANNA")
             + synth.write_study(tmp_path / "s2", n_series=1, per_series=2, kind="MR", patient_id="MIG2"))
    studies = sorted({pydicom.dcmread(f).StudyInstanceUID for f in files})

    server = Server(data).start()
    try:
        stored = dcmtk("storescu", "-aet", SCU, "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *files)
        assert stored.returncode == 0, stored.stderr
        before = _answers(server, tmp_path, studies)
        url = pg_cluster.fresh_url()
        refused = run_cli("index", "migrate", "--to", url, "--data", data, check=False)
        assert refused.returncode == 75 and "in use by" in refused.stderr  # the service holds the data directory
        # A command sharing the index with the server keeps it open too (no data-directory lock for those).
        from appliance.index_migration import ensure_stopped

        with pytest.raises(Exception, match=f"open in process {server.proc.pid}"):
            ensure_stopped(data / "index.db")
    finally:
        assert server.stop() == 0
    assert len(before["study"]) == 2 and len(before["image"][0]) + len(before["image"][1]) == 6
    assert len(before["worklist"]) == 1 and len(before["web"][0]) == 2
    audit_before = _audit(data)
    assert audit_before[0].ok

    moved = run_cli("index", "migrate", "--to", url, "--data", data)
    assert "the index is now" in moved.stdout and "index.db.before-postgresql" in moved.stdout
    assert not (data / "index.db").exists() and (data / "index.db.before-postgresql").exists()
    assert config_mod.load(data, env={}).index.url == url  # appliance.toml names it
    assert oct((data / "appliance.toml").stat().st_mode & 0o777) == "0o600"

    verification, actions = _audit(data)
    assert verification.ok and verification.checked == audit_before[0].checked + 1
    assert actions[:-1] == audit_before[1] and actions[-1] == "index.migrate"

    server = Server(data).start()
    try:
        assert _answers(server, tmp_path, studies) == before
        # New rows get new ids (the sequences were moved past the copied ones).
        more = synth.write_study(tmp_path / "s3", n_series=1, per_series=1, patient_id="MIG3")
        stored = dcmtk("storescu", "-aet", SCU, "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *more)
        assert stored.returncode == 0, stored.stderr
        assert len(_find(server, tmp_path, "STUDY")) == 3
    finally:
        assert server.stop() == 0
    run_cli("user", "add", "drmig2", "--role", "clinician", "--password-file", pw, "--data", data)
    run_cli("modality", "add", "MIGSCU2", "127.0.0.1", "105", "--data", data)
    assert _audit(data)[0].ok


def test_migrate_refuses_a_target_that_holds_an_index(sqlite_box, tmp_path, pg_cluster):
    url = pg_cluster.fresh_url()
    other = tmp_path / "other"
    pw = tmp_path / "pw2"
    pw.write_text(ADMIN_PASSWORD)
    subprocess.run(CLI + ["init", "--data", str(other), "--admin-password-file", str(pw)], check=True,
                   capture_output=True, env=dict(os.environ, PACS_INDEX_URL=url), timeout=120)
    refused = run_cli("index", "migrate", "--to", url, "--data", sqlite_box, check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "user" in refused.stderr
    assert (sqlite_box / "index.db").exists() and config_mod.load(sqlite_box, env={}).index.url == ""
