"""`pacs-appliance import PATH...`, run as a user would: a subprocess, with and without a server."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess

import synth
from helpers import CLI
from importkit import audit_details, index_counts, inbox_files, make_zip, start_server, wait_inbox_empty, write_many


def run_import(data_dir, *paths, timeout=180):
    env = dict(os.environ, PACS_STORAGE_RESERVE_MB="16")
    return subprocess.run(CLI + ["import", "--data", str(data_dir), *map(str, paths)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _count(out: str, label: str) -> int:
    return int(re.search(rf"^{label}:\s+(\d+)", out, re.M).group(1))


def test_large_folder_with_zip_media_and_junk(data_dir, tmp_path):
    src = tmp_path / "stick"
    write_many(src / "exam", 300)
    zipped = synth.write_study(tmp_path / "z", n_series=1, per_series=20)
    make_zip(src / "transfer.zip", {f"a/b/{p.name}": p.read_bytes() for p in zipped})
    cd = src / "CD"
    (cd / "IMG").mkdir(parents=True)
    for i, p in enumerate(synth.write_study(tmp_path / "m", n_series=1, per_series=4)):
        shutil.copy(p, cd / "IMG" / f"I{i:07d}")
    assert subprocess.run(["dcmmkdir", "+r", "+id", "."], cwd=cd, capture_output=True).returncode == 0
    (cd / "AUTORUN.INF").write_text("[autorun]")  # on the media, not in the DICOMDIR: skipped, not failed
    (src / "Thumbs.db").write_bytes(b"\0" * 100)
    (src / "exam" / "series0" / "cut.dcm").write_bytes(zipped[0].read_bytes()[:3000])

    first = run_import(data_dir, src)
    assert first.returncode == 1, first.stdout + first.stderr  # something failed
    out = first.stdout
    assert _count(out, "Imported") == 324 and _count(out, "Already present") == 0 and _count(out, "Failed") == 2
    assert "Skipped:         1 file(s) on DICOMDIR media not listed in the DICOMDIR" in out
    assert re.search(r"failed: .*Thumbs\.db: not a DICOM file", out)
    assert re.search(r"failed: .*cut\.dcm: .*truncated", out)
    assert re.search(r"import: 326/326 files, [\d.]+/s, ETA 0:00", first.stderr)  # plain lines, not a TTY
    assert (src / "transfer.zip").exists() and (src / "Thumbs.db").exists()  # sources are left alone

    again = run_import(data_dir, src / "exam", src / "transfer.zip", cd)
    assert _count(again.stdout, "Imported") == 0 and _count(again.stdout, "Already present") == 324
    assert index_counts(data_dir) == {"instances": 324, "study_counters": 324, "patient_counters": 324}
    runs = [detail for _actor, detail in audit_details(data_dir, "import.run")]
    assert runs == ["pacs-appliance import: 324 imported, 0 already present, 2 failed",
                    "pacs-appliance import: 0 imported, 324 already present, 1 failed"]  # cut.dcm again


def test_cli_while_the_server_imports_its_inbox(data_dir, tmp_path):
    """Two processes write the same SQLCipher index at once; both finish, nothing is lost or doubled."""
    write_many(tmp_path / "for-cli", 150)
    srv = start_server(data_dir)
    try:
        write_many(data_dir / "inbox" / "dropped", 150)
        result = run_import(data_dir, tmp_path / "for-cli")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _count(result.stdout, "Imported") == 150
        wait_inbox_empty(data_dir, timeout=60)
    finally:
        srv.stop()
    assert not inbox_files(data_dir, include_failed=True)
    assert index_counts(data_dir) == {"instances": 300, "study_counters": 300, "patient_counters": 300}


def test_missing_path_is_reported(data_dir, tmp_path):
    result = run_import(data_dir, tmp_path / "nowhere")
    assert result.returncode == 1
    assert "nowhere: no such file or folder" in result.stdout


def test_progress_bar_on_a_terminal():
    from appliance.importer.oneshot import Progress

    out = io.StringIO()
    bar = Progress(4, out, tty=True)
    for _ in range(4):
        bar.advance()
    bar.finish()
    text = out.getvalue()
    assert text.count("\r[") >= 2 and "4/4 files" in text.rsplit("\r", 1)[-1] and "/s, ETA" in text and text.endswith("\n")
