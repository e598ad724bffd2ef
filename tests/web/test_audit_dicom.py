"""DICOM traffic in the audit log, against a real `serve` process and dcmtk: associations and queries."""
import csv
import io
import re

import requests

from helpers import ADMIN_PASSWORD, Server, dcmtk, wait_until


def _audit_rows(base: str) -> list[dict]:
    s = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(base + "/login").text).group(1)
    s.post(base + "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    return list(csv.DictReader(io.StringIO(s.get(base + "/admin/audit.csv").text)))


def test_find_and_rejected_association_are_audited(data_dir):
    server = Server(data_dir, env={"PACS_DICOM_ALLOWED_CALLERS": "FINDER"}).start()
    try:
        r = dcmtk("findscu", "-S", "-aet", "FINDER", "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", "PatientID=AUD123", "-k", "StudyInstanceUID", "127.0.0.1", server.dicom_port)
        assert r.returncode == 0, r.stderr
        dcmtk("echoscu", "-aet", "STRANGER", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port)

        def rows():
            found = _audit_rows(server.url)
            return found if {"dicom.find", "dicom.association"} <= {r["action"] for r in found} and any(
                "rejected" in r["detail"] for r in found) else None

        found = wait_until(rows, 15, interval=0.3, what="the DICOM audit entries")
        find = next(r for r in found if r["action"] == "dicom.find")
        assert find["actor"] == "dicom:FINDER" and find["address"] == "127.0.0.1"
        assert find["patient_id"] == "AUD123" and find["detail"] == "1 C-FIND (STUDY)"
        accepted = [r for r in found if r["action"] == "dicom.association" and r["detail"] == "accepted"]
        assert [r["actor"] for r in accepted] == ["dicom:FINDER"]
        rejected = next(r for r in found if "rejected" in r["detail"])
        assert rejected["actor"] == "dicom:STRANGER"
    finally:
        server.stop()
