"""kill -9 in the middle of a storescu run, then restart: nothing acknowledged is lost.

storescu runs with -d so that each C-STORE response is logged with its SOP
Instance UID and status; every UID it saw acknowledged with 0x0000 must be
found by findscu after the restart and read back byte-identical, and the index
and the archive must agree (orphans moved aside by start-up reconciliation).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom

import readback
import synth
from helpers import Server, dcmtk, wait_until, storescu_acknowledged

N_FILES = 200
SUCCESS = "DIMSE Status                  : 0x0000"


def write_sources(directory: Path) -> tuple[str, str, dict[str, Path]]:
    directory.mkdir()
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    files = {}
    for i in range(N_FILES):
        ds = synth.make_instance("CT", patient_id="CRASH1", study_uid=study, series_uid=series, instance_number=i)
        del ds[0xFFFCFFFC]  # dcmtk drops trailing padding when it sends; keep the files byte-comparable
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files[str(ds.SOPInstanceUID)] = path
    return study, series, files


def test_kill_during_store_then_restart(data_dir, tmp_path):
    study, series, files = write_sources(tmp_path / "src")
    srv = Server(data_dir).start()
    log_path = tmp_path / "storescu.log"
    with open(log_path, "w") as log:
        sender = subprocess.Popen(["storescu", "-d", "-aec", "PACSBOX", "127.0.0.1", str(srv.dicom_port),
                                   *map(str, files.values())], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: log_path.read_text().count(SUCCESS) >= 30, 60, interval=0.005,
                       what="storescu to get 30 acknowledgements")
            srv.proc.kill()  # SIGKILL: no clean shutdown of anything
            srv.proc.wait(10)
            sender.wait(60)
        finally:
            sender.kill()
    acked = storescu_acknowledged(log_path.read_text())
    assert 30 <= len(acked) < N_FILES, f"the kill must land mid-run ({len(acked)} acknowledged)"
    assert sender.returncode != 0  # storescu noticed the server go away

    restarted = Server(data_dir).start()
    try:
        out = tmp_path / "find"
        out.mkdir()
        found = dcmtk("findscu", "-S", "-X", "-od", out, "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=IMAGE",
                      "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}", "-k", "SOPInstanceUID",
                      "127.0.0.1", restarted.dicom_port)
        assert found.returncode == 0, found.stderr
        findable = {pydicom.dcmread(p).SOPInstanceUID for p in out.glob("rsp*.dcm")}
        assert acked <= findable, f"{len(acked - findable)} acknowledged instance(s) lost"

        stored = readback.stored(data_dir)  # decrypts and checks every tag
        for uid in acked:
            assert readback.dataset_bytes(stored[uid]) == readback.dataset_bytes(files[uid].read_bytes())
        with readback.opened(data_dir) as (archive, _index):
            rows = readback.index_object_ids(data_dir)
            assert set(rows.values()) == set(archive.list_ids())  # no row without object, no stray object
        log = restarted.log()
        assert "MISSING" not in log
        assert "index and archive agree" in log or "had no index row" in log
    finally:
        restarted.kill()


def test_restart_reports_orphans_and_missing_objects(data_dir, tmp_path):
    """Start-up reconciliation in a real restart: an unindexed object is moved aside, a lost one is named."""
    srv = Server(data_dir).start()
    files = synth.write_study(tmp_path / "src", n_series=1, per_series=2, patient_id="RECON1")
    assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
    srv.stop()
    rows = readback.index_object_ids(data_dir)
    lost_uid, lost_object = sorted(rows.items())[0]
    with readback.opened(data_dir) as (archive, _index):
        archive._path(lost_object).unlink()  # a disk fault: the index names an object that is gone
        orphan = archive.put_bytes(b"sealed but never indexed").object_id  # a crash before the commit
    restarted = Server(data_dir).start()
    try:
        wait_until(lambda: "MISSING" in restarted.log(), 10, what="the reconciliation report")
        log = restarted.log()
        assert "1 archive object(s) had no index row" in log and orphan in log
        assert "1 indexed object(s) are MISSING" in log and lost_uid in log
        assert (data_dir / "archive" / "orphans" / orphan).exists()
        assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", restarted.dicom_port).returncode == 0
    finally:
        restarted.kill()
