"""Issue 22: every operation from the study page in at most three clicks, as a browser does it (a form
post with the session and CSRF token, against a running `pacs-appliance serve`), with the roles:
a technologist corrects and moves, only an admin deletes and merges; the recycle bin page restores."""
from __future__ import annotations

import io
import re
import zipfile

import pydicom
import requests

import synth
from helpers import ADMIN_PASSWORD, Server, StoreSCP, dcmtk, run_cli
from test_correct import _audit, _qido


def _login(srv, user, password) -> requests.Session:
    s = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{srv.url}/login", timeout=30).text).group(1)
    r = s.post(f"{srv.url}/login", data={"username": user, "password": password, "csrf_token": token},
               allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return s


def _click(session, page_html: str, srv, link_text: str) -> str:
    """Follow the link with this text on a page (one click); return the new page's HTML."""
    href = re.search(r'<a[^>]*href="([^"]+)"[^>]*>' + re.escape(link_text), page_html).group(1)
    r = session.get(srv.url + href, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def _submit(session, page_html: str, srv, button: str, **fields) -> requests.Response:
    """Fill in and submit the form whose submit button says ``button`` (one click)."""
    for form in re.findall(r"<form.*?</form>", page_html, re.S):
        if f">{button}</button>" in form:
            action = re.search(r'action="([^"]+)"', form).group(1)
            data = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form))
            data.update(fields)
            return session.post(srv.url + action, data=data, timeout=60, allow_redirects=False)
    raise AssertionError(f"no form with a button {button!r}")


def test_fix_page_operations_and_roles(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "s", n_series=2, per_series=2, patient_name="TYPO^NAM", patient_id="W-1")
    other = synth.write_study(tmp_path / "o", n_series=1, per_series=1, patient_name="RIGHT^ONE", patient_id="R-1")
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    (tmp_path / "tech.pw").write_text("tech-password-123")
    run_cli("user", "add", "tina", "--role", "technologist", "--password-file", tmp_path / "tech.pw",
            "--data", data_dir)
    scp = StoreSCP(tmp_path / "peer", ae_title="TEACHING").start()
    run_cli("modality", "add", "TEACHING", "127.0.0.1", scp.port, "--data", data_dir)
    srv = Server(data_dir).start()
    try:
        assert dcmtk("storescu", "-aet", "TEACHING", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files,
                     *other).returncode == 0
        tech = _login(srv, "tina", "tech-password-123")
        study_page = tech.get(f"{srv.url}/studies/{study_uid}", timeout=30).text

        # Technologist: study page -> Fix… (1) -> Save correction (2).
        fix = _click(tech, study_page, srv, "Fix…")
        assert "Delete" not in fix and "Merge patients" not in fix  # admin-only forms are not offered
        r = _submit(tech, fix, srv, "Save correction", PatientName="TYPO^NAME", reason="typo")
        assert r.status_code == 302 and r.headers["Location"].endswith(f"/studies/{study_uid}")
        assert "Corrected 4 image(s): PatientName." in tech.get(srv.url + r.headers["Location"], timeout=30).text
        [hit] = _qido(srv, StudyInstanceUID=study_uid)
        assert hit["00100010"]["Value"][0]["Alphabetic"] == "TYPO^NAME"
        [(actor, *_rest)] = _audit(data_dir, "study.correct")
        assert actor == "tina"
        # Move to the right patient: Fix… (1) -> Move study (2).
        r = _submit(tech, fix, srv, "Move study", patient_id="R-1", reason="wrong patient")
        assert r.status_code == 302 and _qido(srv, PatientID="R-1") and not _qido(srv, PatientID="W-1")
        # A refusal comes back on the Fix page with the reason, and changes nothing.
        r = _submit(tech, fix, srv, "Save correction", PatientBirthDate="31.12.1980", reason="x")
        assert "PatientBirthDate: a date" in tech.get(srv.url + r.headers["Location"], timeout=30).text
        # Not the technologist's to do: deleting.
        assert tech.post(f"{srv.url}/studies/{study_uid}/fix/delete", timeout=30,
                         data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', fix).group(1),
                               "reason": "x"}).status_code == 403

        admin = _login(srv, "admin", ADMIN_PASSWORD)
        fix = _click(admin, admin.get(f"{srv.url}/studies/{study_uid}", timeout=30).text, srv, "Fix…")
        # Anonymized copy: Fix… (1) -> Download (2).
        r = _submit(admin, fix, srv, "Download anonymized ZIP", reason="second opinion")
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert len(zf.namelist()) == 4 and all(b"RIGHT^ONE" not in zf.read(n) for n in zf.namelist())
        r = _submit(admin, fix, srv, "Send anonymized copy", peer="TEACHING", reason="second opinion")
        assert "4 image(s) sent to TEACHING" in admin.get(srv.url + r.headers["Location"], timeout=30).text
        assert len(scp.files()) == 4 and all(b"RIGHT^ONE" not in p.read_bytes() for p in scp.files())
        # Delete: Fix… (1) -> Delete (2) -> the browser's confirm (3; data-confirm).
        assert 'data-confirm="Delete this?' in fix
        r = _submit(admin, fix, srv, "Delete", reason="test study")
        assert r.status_code == 302 and _qido(srv, StudyInstanceUID=study_uid) == []
        # Restore from the recycle bin page.
        bin_page = admin.get(f"{srv.url}/recycle-bin", timeout=30).text
        assert "test study" in bin_page
        r = _submit(admin, bin_page, srv, "Restore")
        assert r.status_code == 302 and len(_qido(srv, StudyInstanceUID=study_uid)) == 1
        assert {a for a in ("study.delete", "study.restore", "study.export.anonymized", "study.move")
                if _audit(data_dir, a)} == {"study.delete", "study.restore", "study.export.anonymized", "study.move"}
    finally:
        srv.stop()
        scp.stop()
