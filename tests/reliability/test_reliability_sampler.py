"""The background sampled verification runs in a real server; a flipped bit shows on the dashboard and /metrics."""
from __future__ import annotations

import re

import requests

import synth
from helpers import ADMIN_PASSWORD, Server, dcmtk, wait_until


def _login(url: str) -> requests.Session:
    s = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{url}/login").text).group(1)
    s.post(f"{url}/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    return s


def test_sampler_finds_a_flipped_bit(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "src", n_series=1, per_series=2, patient_id="SAMPLE1")
    srv = Server(data_dir, env={"PACS_INTEGRITY_INTERVAL_HOURS": str(1 / 3600)}).start()  # a pass every second
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
        metrics = lambda: requests.get(f"{srv.url}/metrics", timeout=10).text  # noqa: E731
        wait_until(lambda: "pacs_verify_last_checked 2" in metrics(), 20, what="a clean verification pass")
        assert "pacs_verify_last_damaged 0" in metrics()
        page = _login(srv.url).get(f"{srv.url}/").text
        assert "Integrity" in page and "2 images checked" in page

        # Bit rot in one object: the next pass reports it, the dashboard warns.
        archive = data_dir / "archive"
        obj = next(p for p in archive.rglob("*") if p.is_file() and p.relative_to(archive).parts[0] != "tmp"
                   and p.stat().st_size > 1000)
        raw = bytearray(obj.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        obj.write_bytes(bytes(raw))
        wait_until(lambda: "pacs_verify_last_damaged 1" in metrics(), 20, what="the damage to be found")
        page = _login(srv.url).get(f"{srv.url}/").text
        assert "1 damaged" in page and "pacs-appliance verify" in page
    finally:
        srv.kill()
