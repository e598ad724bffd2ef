"""Below the storage reserve: STOW-RS answers 503 (Retry-After) with the reason, inbox files wait in the inbox, C-STORE 0xA700.

The reserve is set above any real free space (PACS_STORAGE_RESERVE_MB), which is
what the ingest checks before taking anything; tests/dicom and tests/index
cover a really full filesystem (ENOSPC, SQLITE_FULL) on a small tmpfs.
"""
from __future__ import annotations

import io
import time
import uuid

import requests

import synth
from helpers import ADMIN_PASSWORD, Server, dcmtk, failed_imports

DCM = 'multipart/related; type="application/dicom"'


def test_below_reserve_stow_inbox_and_cstore_refuse_with_reason(data_dir, tmp_path):
    inbox = data_dir / "inbox"
    paths = synth.write_study(inbox / "study", n_series=1, per_series=2)
    srv = Server(data_dir, env={"PACS_STORAGE_RESERVE_MB": str(1 << 40), "PACS_INBOX_STABLE_SECONDS": "0.2",
                                "PACS_INBOX_POLL_SECONDS": "0.5", "PACS_INBOX_RETRY_SECONDS": "0.5"}).start()
    try:
        buf = io.BytesIO()
        synth.make_instance("CT").save_as(buf, enforce_file_format=True)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue()
                + f"\r\n--{boundary}--\r\n".encode())
        r = requests.post(f"{srv.url}/dicomweb/studies", data=body, auth=("admin", ADMIN_PASSWORD), timeout=30,
                          headers={"Content-Type": f'{DCM}; boundary="{boundary}"', "Accept": "application/dicom+json"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "300", r.text
        assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        assert "reserve" in r.headers.get("Warning", ""), r.headers

        sent = dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, paths[0])
        assert "Refused: OutOfResources" in sent.stderr, sent.stderr

        time.sleep(2.0)  # several inbox scans and retries
        assert all(p.exists() for p in paths), "inbox files must wait in the inbox while the disk is full"
        assert not failed_imports(srv.data_dir)
        assert srv.proc.poll() is None
    finally:
        srv.stop()
