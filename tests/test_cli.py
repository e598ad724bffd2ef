"""`pacs-appliance init` and `serve` as a user runs them: exit codes, files, modes, clean stop."""
from __future__ import annotations

import signal
import stat
import subprocess

import pytest

from helpers import ADMIN_PASSWORD, CLI, Server, dcmtk, init_data_dir


def run(*args, **kwargs):
    return subprocess.run(CLI + list(map(str, args)), capture_output=True, text=True, timeout=60, **kwargs)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_complete_private_data_dir(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(ADMIN_PASSWORD + "\n")
    data = tmp_path / "data"
    done = run("init", "--data", data, "--admin-password-file", pw)
    assert done.returncode == 0, done.stderr
    assert "Recovery key:" in done.stdout and ADMIN_PASSWORD not in done.stdout
    for name in ("appliance.toml", "keys", "index.db", "archive", "inbox"):
        assert (data / name).exists(), name
    assert mode(data / "keys") == 0o700
    for key_file in (data / "keys").iterdir():
        assert mode(key_file) == 0o600, key_file.name
    assert b"SQLite format 3" not in (data / "index.db").read_bytes()[:16]  # encrypted, not plain SQLite


def test_init_generates_and_prints_a_password(tmp_path):
    done = run("init", "--data", tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert "password '" in done.stdout


def test_init_refuses_to_overwrite_keys(tmp_path):
    data = init_data_dir(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in (data / "keys").iterdir()}
    done = run("init", "--data", data)
    assert done.returncode == 2
    assert "already initialised" in done.stderr and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in (data / "keys").iterdir()} == before


def test_serve_refuses_a_non_empty_uninitialised_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "something").write_text("x")
    done = run("serve", "--data", data)
    assert done.returncode == 2
    assert "not an initialised data directory" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal(data_dir, sig):
    srv = Server(data_dir).start()
    try:
        assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port).returncode == 0
        srv.proc.send_signal(sig)
        assert srv.proc.wait(20) == 0
    finally:
        srv.kill()
    log = srv.log()
    assert "appliance ready" in log and "appliance stopped" in log and "Traceback" not in log


def test_serve_on_a_fresh_dir_initialises_it(tmp_path):
    """The README's first command: `serve` on no data directory creates one and prints how to log in."""
    data = tmp_path / "fresh"
    srv = Server(data).start()
    try:
        assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port).returncode == 0
    finally:
        srv.kill()
    assert "Recovery key:" in srv.log()
    assert (data / "keys" / "keyring.json").exists()
