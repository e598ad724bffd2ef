"""The watched inbox, through a real `pacs-appliance serve` process."""
from __future__ import annotations

import shutil
import time

import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

import synth
from helpers import failed_imports, wait_until
from importkit import (audit_details, index_counts, inbox_files, make_zip, start_server, wait_inbox_empty, write_many)


def _reason(data_dir, rel: str) -> str:
    return failed_imports(data_dir)[rel][0]


def test_slowly_written_file_is_imported_once_complete(inbox_server, data_dir, tmp_path):
    """A writer that pauses (file still open) longer than the stability time is waited for."""
    data = synth.write_study(tmp_path / "src", n_series=1, per_series=1)[0].read_bytes()
    target = data_dir / "inbox" / "slow.dcm"
    with open(target, "wb") as fh:
        third = len(data) // 3
        fh.write(data[:third])
        fh.flush()
        time.sleep(2.0)  # 5x the stability time, but the file is still open for writing
        assert target.exists(), "a file still open for writing was taken"
        assert not failed_imports(data_dir)
        for i in range(third, len(data), 4096):
            fh.write(data[i:i + 4096])
            fh.flush()
            time.sleep(0.05)
    wait_inbox_empty(data_dir)
    assert not inbox_files(data_dir, include_failed=True) and not failed_imports(data_dir)
    inbox_server.stop()
    assert index_counts(data_dir)["instances"] == 1


def test_zip_with_nested_folders_and_a_bad_member(inbox_server, data_dir, tmp_path):
    good = synth.write_study(tmp_path / "a", n_series=2, per_series=2)
    make_zip(tmp_path / "good.zip", {f"CD/STUDY/SER{i // 2}/IMG{i}": p.read_bytes() for i, p in enumerate(good)})
    other = synth.write_study(tmp_path / "b", n_series=1, per_series=2)
    make_zip(tmp_path / "mixed.zip", {"x/y/one.dcm": other[0].read_bytes(), "x/two": other[1].read_bytes(),
                                      "x/readme.txt": b"not an image", "../../evil.dcm": b"junk"})
    shutil.copy(tmp_path / "good.zip", data_dir / "inbox" / "good.zip")
    (data_dir / "inbox" / "from-hospital").mkdir()
    shutil.copy(tmp_path / "mixed.zip", data_dir / "inbox" / "from-hospital" / "mixed.zip")
    wait_until(lambda: not inbox_files(data_dir), 30, what="the ZIPs to be taken")
    assert not (data_dir / "inbox" / "good.zip").exists()
    assert failed_imports(data_dir)["from-hospital/mixed.zip"][1] == (tmp_path / "mixed.zip").read_bytes()
    reason = _reason(data_dir, "from-hospital/mixed.zip")
    assert "2 of 4 files in this ZIP could not be imported" in reason
    assert "x/readme.txt: not a DICOM file" in reason and "../../evil.dcm" in reason
    assert not (data_dir / "inbox" / "from-hospital").exists() and not (data_dir.parent / "evil.dcm").exists()
    inbox_server.stop()
    assert index_counts(data_dir)["instances"] == 6


def test_dicomdir_tree_from_dcmmkdir(inbox_server, data_dir, tmp_path):
    cd = tmp_path / "cd"
    (cd / "IMAGES").mkdir(parents=True)
    for i, p in enumerate(synth.write_study(tmp_path / "src", n_series=2, per_series=3)):
        shutil.copy(p, cd / "IMAGES" / f"IM{i:06d}")
    made = _dcmmkdir(cd)
    assert made.returncode == 0, made.stderr
    (cd / "VIEWER.EXE").write_bytes(b"MZ not dicom")  # what a CD carries besides images
    staged = data_dir / "staged-cd"  # the whole tree appears at once: a slow copy on a loaded machine
    shutil.copytree(cd, staged)       # could leave files stable (0.4 s) before the DICOMDIR arrived
    staged.rename(data_dir / "inbox" / "PATIENT_CD")
    wait_inbox_empty(data_dir)
    assert not (data_dir / "inbox" / "PATIENT_CD").exists()
    assert "not listed in the DICOMDIR" in _reason(data_dir, "PATIENT_CD/VIEWER.EXE")
    assert not (data_dir / "inbox" / "failed" / "PATIENT_CD" / "DICOMDIR").exists()
    inbox_server.stop()
    counts = index_counts(data_dir)
    assert counts["instances"] == 6 and counts["study_counters"] == 6


def _dcmmkdir(cd):
    import subprocess

    return subprocess.run(["dcmmkdir", "+r", "+id", "."], cwd=cd, capture_output=True, text=True, timeout=60)


def test_junk_truncated_and_bare_files(inbox_server, data_dir, tmp_path):
    paths = synth.write_study(tmp_path / "src", n_series=1, per_series=2)
    inbox = data_dir / "inbox"
    (inbox / "notes").mkdir()
    (inbox / "notes" / "letter.txt").write_text("Dear colleague, please find the images attached.")
    data = paths[0].read_bytes()
    (inbox / "cut.dcm").write_bytes(data[: len(data) - 5000])
    bare = DicomBytesIO()
    bare.is_little_endian, bare.is_implicit_VR = True, False
    write_dataset(bare, pydicom.dcmread(paths[1]))
    (inbox / "IMG0001").write_bytes(bare.getvalue())  # no preamble, no file meta, no extension
    wait_inbox_empty(data_dir)
    assert "not a DICOM file" in _reason(data_dir, "notes/letter.txt")
    assert "truncated" in _reason(data_dir, "cut.dcm")
    assert failed_imports(data_dir)["cut.dcm"][1] == data[: len(data) - 5000]  # sealed, unchanged
    assert not inbox_files(data_dir, include_failed=True)  # no plaintext left behind
    assert not (inbox / "notes").exists()
    inbox_server.stop()
    assert index_counts(data_dir)["instances"] == 1


def test_disk_full_leaves_files_in_the_inbox(data_dir, tmp_path):
    paths = synth.write_study(data_dir / "inbox" / "study", n_series=1, per_series=3)
    srv = start_server(data_dir, PACS_STORAGE_RESERVE_MB=str(1 << 40), PACS_INBOX_RETRY_SECONDS="0.5")
    try:
        wait_until(lambda: "disk full" in srv.log(), 20, what="the disk-full warning")
        time.sleep(1.0)
        assert all(p.exists() for p in paths)
        assert not failed_imports(data_dir)
    finally:
        srv.stop()
    srv = start_server(data_dir)
    try:
        wait_inbox_empty(data_dir)
    finally:
        srv.stop()
    assert index_counts(data_dir)["instances"] == 3


def test_kill_during_500_file_import_then_restart(data_dir):
    """Files present at start-up are imported; a kill -9 midway loses and double-counts nothing."""
    write_many(data_dir / "inbox" / "big", 500)
    srv = start_server(data_dir)
    try:
        wait_until(lambda: len(inbox_files(data_dir)) < 400, 60, interval=0.02, what="the import to be underway")
    finally:
        srv.kill()  # SIGKILL
    left = len(inbox_files(data_dir))
    assert 0 < left < 500, f"the kill came too late to test anything ({left} files left)"
    srv = start_server(data_dir)
    try:
        wait_inbox_empty(data_dir, timeout=60)
    finally:
        srv.stop()
    assert not inbox_files(data_dir, include_failed=True) and not failed_imports(data_dir)
    assert not (data_dir / "inbox" / "big").exists()
    assert index_counts(data_dir) == {"instances": 500, "study_counters": 500, "patient_counters": 500}


def test_move_to_processed_and_audit(data_dir, tmp_path):
    paths = synth.write_study(data_dir / "inbox" / "ward" / "exam", n_series=1, per_series=2)
    srv = start_server(data_dir, PACS_INBOX_AFTER_IMPORT="move")
    try:
        wait_inbox_empty(data_dir)
    finally:
        srv.stop()
    processed = data_dir / "inbox" / "processed" / "ward" / "exam"
    assert sorted(p.name for p in processed.iterdir()) == sorted(p.name for p in paths)
    assert not (data_dir / "inbox" / "ward").exists()
    assert ("system", "inbox: 2 imported, 0 already present, 0 failed") in audit_details(data_dir, "import.run")


def test_duplicate_with_different_content_is_refused_when_the_policy_rejects(data_dir, tmp_path):
    ds = synth.make_instance("MR")
    ds.save_as(data_dir / "inbox" / "first.dcm", enforce_file_format=True)
    srv = start_server(data_dir, PACS_STORAGE_ON_CONFLICT="reject")
    try:
        wait_inbox_empty(data_dir)
        ds.StudyDescription = "EDITED ELSEWHERE"
        ds.save_as(data_dir / "inbox" / "second.dcm", enforce_file_format=True)
        wait_inbox_empty(data_dir)
        ds.save_as(tmp_path / "third.dcm", enforce_file_format=True)
        shutil.copy(tmp_path / "third.dcm", data_dir / "inbox" / "third.dcm")  # same bytes as second: also refused
        wait_inbox_empty(data_dir)
    finally:
        srv.stop()
    assert "duplicate with different content" in _reason(data_dir, "second.dcm")
    assert "third.dcm" in failed_imports(data_dir)
    assert index_counts(data_dir)["instances"] == 1


def test_cd_contents_at_the_top_of_the_inbox_and_a_zip_bomb(data_dir, tmp_path):
    """A DICOMDIR dropped straight into the inbox speaks only for the files it lists."""
    cd = tmp_path / "cd"
    (cd / "DATA").mkdir(parents=True)
    for i, p in enumerate(synth.write_study(tmp_path / "src", n_series=1, per_series=3)):
        shutil.copy(p, cd / "DATA" / f"IM{i:06d}")
    assert _dcmmkdir(cd).returncode == 0
    loose = synth.write_study(tmp_path / "other", n_series=1, per_series=1)[0]
    make_zip(tmp_path / "bomb.zip", {"big.dcm": b"\0" * (3 << 20)})  # 3 MiB of zeros, a few KB zipped
    srv = start_server(data_dir, PACS_INBOX_ZIP_MEMBER_MAX_MB="1")
    try:
        shutil.copytree(cd, data_dir / "inbox", dirs_exist_ok=True)
        shutil.copy(loose, data_dir / "inbox" / "unrelated.dcm")  # not in the DICOMDIR, still imported
        shutil.copy(tmp_path / "bomb.zip", data_dir / "inbox" / "bomb.zip")
        wait_inbox_empty(data_dir)
    finally:
        srv.stop()
    assert "above the 1 MiB limit" in _reason(data_dir, "bomb.zip")
    assert not list((data_dir / "inbox").iterdir())
    assert index_counts(data_dir)["instances"] == 4
