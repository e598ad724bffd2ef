"""Issue 14 item 7: files that fail to import no longer stay in inbox/failed/ as plaintext.

They are sealed into the archive's encrypted quarantine with their reason; `pacs-appliance import
failed list|show|retry|export|delete` and the admin page list, retry, export and delete them; every
plaintext export is audited. Plaintext an older version left in inbox/failed/ is sealed at start-up.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import synth
from helpers import ADMIN_PASSWORD, Server, failed_imports, run_cli, wait_until

FAST_INBOX = {"PACS_INBOX_STABLE_SECONDS": "0.4", "PACS_INBOX_POLL_SECONDS": "1", "PACS_INBOX_ZIP_MEMBER_MAX_MB": "1"}
SECRET = b"SECRET^PATIENT"


def _big_instance() -> bytes:
    """A valid 2 MiB CT image: above a 1 MiB ZIP member limit, fine below 8 MiB."""
    ds = synth.make_instance("CT", patient_name="SECRET^PATIENT", patient_id="SECRET01")
    ds.Rows = ds.Columns = 1024
    ds.PixelData = np.zeros((1024, 1024), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if needle in path.read_bytes() or needle.decode() in str(path):
                found.append(str(path.relative_to(root)))
    return found


def _audit(data_dir: Path, action: str) -> list[tuple[str, str]]:
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.records.audit import AuditLog

    cfg = load(data_dir, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return [(e.actor, e.detail) for e in AuditLog(index).query(action=action, newest_first=False, limit=None)]
    finally:
        index.close()


def test_failed_imports_are_sealed_listed_retried_exported_and_deleted(data_dir, tmp_path):
    ct = synth.write_study(tmp_path / "src", n_series=1, per_series=1, patient_name="SECRET^PATIENT")[0]
    cut = ct.read_bytes()[:-3000]
    big = _big_instance()
    srv = Server(data_dir, env=FAST_INBOX).start()
    try:
        folder = data_dir / "inbox" / "SECRET^PATIENT"
        folder.mkdir()
        (folder / "cut.dcm").write_bytes(cut)
        with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("big.dcm", big)
        shutil.copy(tmp_path / "big.zip", data_dir / "inbox" / "big.zip")
        wait_until(lambda: len(failed_imports(data_dir)) == 2, 30, what="both files to fail")
        wait_until(lambda: not folder.exists(), 10, what="the emptied folder to go")

        # Nothing readable is left: no file on the data disk holds the name, in its bytes or its path.
        assert not (data_dir / "inbox" / "failed").exists()
        assert not _files_holding(data_dir, SECRET)

        listed = json.loads(run_cli("import", "failed", "list", "--json", "--data", data_dir).stdout)
        by_name = {i["name"]: i for i in listed}
        assert set(by_name) == {"SECRET^PATIENT/cut.dcm", "big.zip"}
        assert "truncated" in by_name["SECRET^PATIENT/cut.dcm"]["reason"]
        assert "above the 1 MiB limit" in by_name["big.zip"]["reason"]
        cut_id, zip_id = by_name["SECRET^PATIENT/cut.dcm"]["item_id"], by_name["big.zip"]["item_id"]
        assert "truncated" in run_cli("import", "failed", "show", cut_id, "--data", data_dir).stdout

        # Export: the original bytes, written 0600, and an audit entry naming who.
        out = run_cli("import", "failed", "export", cut_id, "--to", tmp_path / "out", "--data", data_dir).stdout
        exported = Path(out.strip())
        assert exported.read_bytes() == cut and (exported.stat().st_mode & 0o777) == 0o600
        assert any(cut_id in detail for _actor, detail in _audit(data_dir, "import.failed.export"))

        # Retry after fixing the cause (a higher ZIP member limit): imported, gone from the quarantine.
        retried = run_cli("import", "failed", "retry", zip_id, "--data", data_dir,
                          env={"PACS_INBOX_ZIP_MEMBER_MAX_MB": "8", "PACS_STORAGE_RESERVE_MB": "16"})
        assert f"{zip_id}  imported: 1 imported" in retried.stdout
        # A retry that fails again keeps the item, with the new reason, and exits 1.
        again = run_cli("import", "failed", "retry", cut_id, "--data", data_dir, check=False,
                        env={"PACS_STORAGE_RESERVE_MB": "16"})
        assert again.returncode == 1 and "FAILED AGAIN" in again.stdout and "truncated" in again.stdout
        left = failed_imports(data_dir)
        assert list(left) == ["SECRET^PATIENT/cut.dcm"] and left["SECRET^PATIENT/cut.dcm"][1] == cut

        run_cli("import", "failed", "delete", "--yes", cut_id, "--data", data_dir)
        assert not failed_imports(data_dir)
        assert [a for a, _ in _audit(data_dir, "import.failed.delete")] and _audit(data_dir, "import.failed.retry")
    finally:
        srv.stop()
    r = run_cli("import", "failed", "list", "--data", data_dir)
    assert "no failed imports" in r.stdout


def test_plaintext_left_in_failed_by_an_older_version_is_sealed_at_start(data_dir, tmp_path):
    ct = synth.write_study(tmp_path / "src", n_series=1, per_series=1, patient_name="SECRET^PATIENT")[0]
    legacy = data_dir / "inbox" / "failed" / "SECRET^PATIENT"
    legacy.mkdir(parents=True)
    (legacy / "x.dcm").write_bytes(ct.read_bytes()[:-3000])
    (legacy / "x.dcm.reason.txt").write_text("x.dcm was not imported.\n\nReason: truncated\n")
    srv = Server(data_dir, env=FAST_INBOX).start()
    srv.stop()
    assert not (data_dir / "inbox" / "failed").exists()
    assert not _files_holding(data_dir, SECRET)
    reason, content = failed_imports(data_dir)["SECRET^PATIENT/x.dcm"]
    assert "Reason: truncated" in reason and content == ct.read_bytes()[:-3000]
    assert "sealed 1 plaintext file(s)" in srv.log()


def test_admin_page_lists_downloads_with_audit_retries_and_deletes(data_dir, tmp_path):
    from appliance.app import build
    from appliance.config import load
    from appliance.records import accounts
    from web import create_app

    app = build(load(data_dir, env={"PACS_STORAGE_RESERVE_MB": "1"}), with_web=False)
    try:
        q = app.failed_imports.quarantine
        junk = q.put(io.BytesIO(b"not dicom at all"), "ward 3/letter.txt", "not a DICOM file")
        good = synth.make_instance("CT")
        buf = io.BytesIO()
        good.save_as(buf, enforce_file_format=True)
        fixed = q.put(io.BytesIO(buf.getvalue()), "cd/IMG1", "the archive was refusing it")
        app.index.writer.run(lambda: accounts.create_user(app.index.accounts, "tech", "a-long-enough-password",
                                                          "technologist"))
        flask_app = create_app(app, {"TESTING": True})

        def login(user, password):
            client = flask_app.test_client()
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
            client.post("/login", data={"username": user, "password": password, "csrf_token": token})
            return client

        tech = login("tech", "a-long-enough-password")
        assert tech.get("/admin/failed-imports").status_code == 403
        assert tech.get(f"/admin/failed-imports/{junk.item_id}/file").status_code == 403
        client = login("admin", ADMIN_PASSWORD)
        page = client.get("/admin/failed-imports").text
        assert "ward 3/letter.txt" in page and "not a DICOM file" in page
        got = client.get(f"/admin/failed-imports/{junk.item_id}/file")
        assert got.status_code == 200 and got.data == b"not dicom at all"
        app.audit.flush()
        entries = list(app.audit.query(action="import.failed.export", limit=None))
        assert entries and entries[0].actor == "admin" and junk.item_id in entries[0].detail

        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = client.post("/admin/failed-imports/retry", data={"csrf_token": token, "item": fixed.item_id},
                        follow_redirects=True)
        assert "1 failed import(s) are now in the archive" in r.text
        assert app.index.search("IMAGE", {"SOPInstanceUID": good.SOPInstanceUID})
        r = client.post(f"/admin/failed-imports/{junk.item_id}/delete", data={"csrf_token": token},
                        follow_redirects=True)
        assert "No failed imports." in r.text
    finally:
        app.index.close()
