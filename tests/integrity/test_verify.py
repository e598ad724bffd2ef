"""`pacs-appliance verify` finds a flipped bit and a missing object, and says which instance."""
import subprocess

import synth
from helpers import CLI

from appliance.cli import open_appliance
from appliance.ingest import Origin


def _store(data_dir, n):
    uids = []
    with open_appliance(data_dir) as app:
        for i in range(n):
            ds = synth.make_instance("CT", instance_number=i + 1)
            from io import BytesIO

            buf = BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            result = app.ingestor.store_bytes(buf.getvalue(), Origin("import"))
            uids.append((result.sop_uid, result.object_id))
        return uids, app.archive


def _verify(data_dir):
    return subprocess.run(CLI + ["verify", "--data", str(data_dir)], capture_output=True, text=True,
                          env={"PACS_STORAGE_RESERVE_MB": "1", "PATH": "/usr/bin:/bin"})


def test_verify_clean_archive_exits_zero(data_dir, monkeypatch):
    monkeypatch.setenv("PACS_STORAGE_RESERVE_MB", "1")
    _store(data_dir, 3)
    done = _verify(data_dir)
    assert done.returncode == 0, done.stderr
    assert "checked 3 object(s)" in done.stdout
    assert "all objects intact" in done.stdout


def test_verify_reports_flipped_bit_and_missing_object(data_dir, monkeypatch):
    monkeypatch.setenv("PACS_STORAGE_RESERVE_MB", "1")
    (damaged_uid, damaged_obj), (missing_uid, missing_obj), _ = _store(data_dir, 3)[0]
    objects = data_dir / "archive" / "objects"
    damaged = objects / damaged_obj[:2] / damaged_obj[2:4] / damaged_obj
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    (objects / missing_obj[:2] / missing_obj[2:4] / missing_obj).unlink()

    done = _verify(data_dir)
    assert done.returncode == 4
    assert f"DAMAGED {damaged_uid}" in done.stdout
    assert f"MISSING {missing_uid}" in done.stdout
    assert "1 damaged, 1 missing" in done.stdout


def test_help_names_the_exit_code_a_damaged_archive_gives():
    from appliance.errors import IntegrityError
    from helpers import run_cli

    assert f"exit {IntegrityError.exit_code} on any damage" in " ".join(run_cli("verify", "--help").stdout.split())
