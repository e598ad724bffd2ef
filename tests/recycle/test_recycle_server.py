"""End to end with real processes: the CLI dry run, the running server's recycling service, C-FIND with
dcmtk's findscu, and `storage restore`."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pydicom
import synth
from helpers import Server, dataset_bytes, dcmtk, run_cli as cli, wait_until

HUGE_MB = str(1 << 40)  # a watermark above any real disk's free space


def find_studies(server, tmp) -> set[str]:
    out = Path(tempfile.mkdtemp(dir=tmp))
    found = dcmtk("findscu", "-S", "-X", "-od", str(out), "-aet", "TESTSCU", "-aec", "PACSBOX", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "127.0.0.1", str(server.dicom_port))
    assert found.returncode == 0, found.stderr
    return {str(pydicom.dcmread(p).StudyInstanceUID) for p in out.iterdir()}


def test_dry_run_then_service_then_restore(data_dir, tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    base = {"PACS_BACKUP_TARGET": f"file://{nas}", "PACS_STORAGE_RESERVE_MB": "16",
            "PACS_STORAGE_RECYCLE_MIN_AGE_DAYS": "0"}
    on = {**base, "PACS_STORAGE_RECYCLE": "true", "PACS_STORAGE_RECYCLE_FREE_BELOW_MB": HUGE_MB,
          "PACS_STORAGE_RECYCLE_TARGET_FREE_MB": HUGE_MB}
    old = synth.write_study(tmp_path / "old", n_series=1, per_series=2, patient_id="RCYS1")
    cli("import", tmp_path / "old", "--data", data_dir, env=base)
    cli("backup", "run", "--data", data_dir, env=base)
    synth.write_study(tmp_path / "new", n_series=1, per_series=2, patient_id="RCYS2")
    cli("import", tmp_path / "new", "--data", data_dir, env=base)  # not backed up
    old_uid = str(pydicom.dcmread(old[0]).StudyInstanceUID)
    originals = {str(pydicom.dcmread(p).SOPInstanceUID): p.read_bytes() for p in old}

    off = cli("storage", "recycle", "--data", data_dir, env=base, check=False)
    assert off.returncode == 2 and "recycling is off" in off.stderr

    dry = cli("storage", "recycle", "--dry-run", "--data", data_dir, env=on)
    lines = dry.stdout.splitlines()
    assert any(old_uid in line and "WOULD RECYCLE" in line for line in lines), dry.stdout
    assert any("kept: 2 of 2 objects not yet offsite" in line for line in lines), dry.stdout
    assert "dry run:" in lines[-1]

    server = Server(data_dir, env=on).start()
    try:
        # The service checks at start: only the backed-up study goes.
        wait_until(lambda: len(find_studies(server, tmp_path)) == 1, 30, what="recycling at start")
        assert old_uid not in find_studies(server, tmp_path)
    finally:
        assert server.stop() == 0
    listed = cli("storage", "recycled", "--data", data_dir, env=base).stdout
    assert old_uid in listed and "2 instances" in listed

    restored = cli("storage", "restore", old_uid, "--data", data_dir, env=base)
    assert "2 instance(s)" in restored.stdout
    server = Server(data_dir, env=base).start()
    try:
        assert old_uid in find_studies(server, tmp_path)
        out = tmp_path / "moved"
        out.mkdir()
        got = dcmtk("getscu", "-S", "+B", "-aet", "TESTSCU", "-aec", "PACSBOX", "-od", str(out), "-k",
                    "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={old_uid}", "127.0.0.1",
                    str(server.dicom_port))
        assert got.returncode == 0, got.stderr
        back = {str(pydicom.dcmread(p).SOPInstanceUID): p.read_bytes() for p in out.iterdir()}
        assert back.keys() == originals.keys()
        for sop, raw in originals.items():  # the dataset, byte for byte (getscu writes its own file meta)
            assert dataset_bytes(back[sop]) == dataset_bytes(raw)
    finally:
        server.stop()
