"""Issue 14 item 8: a media export killed half-way must not leave plaintext DICOM in /dev/shm.

A real export (pydicom FileSet staging, as 'Export for CD/USB' does) runs in a child process
whose archive stops answering after the first objects; the child is SIGKILLed mid-export. The
staging it left is plaintext; creating the web app (start-up) must remove it, while another
export that is still running keeps its folder.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import synth
from helpers import init_data_dir

CHILD = textwrap.dedent("""
    import io, sys, time
    import pydicom
    from web.viewer.export import media_zip
    blobs = [open(p, "rb").read() for p in sys.argv[2:]]

    class SlowArchive:
        def read(self, object_id):
            n = int(object_id)
            if n >= 2:
                print("staged", flush=True)
                time.sleep(600)  # killed here, with two instances staged
            return blobs[n]

    media_zip(SlowArchive(), [str(i) for i in range(len(blobs))], staging_base=sys.argv[1])
""")


def _plaintext_files(base: Path) -> list[Path]:
    return [p for p in base.rglob("*") if p.is_file() and p.name != ".lock"]


def _killed_export(base: Path, files: list[Path]) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(base), *map(str, files)], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ))
    try:
        assert child.stdout.readline().strip() == "staged"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)


@pytest.fixture
def staged_then_killed(tmp_path):
    base = tmp_path / "shm"
    base.mkdir()
    files = synth.write_study(tmp_path / "study", n_series=1, per_series=3, patient_name="SHM^LEAK")
    _killed_export(base, files)
    left = _plaintext_files(base)
    assert left and any(b"SHM^LEAK" in p.read_bytes() for p in left), "the child should have staged plaintext"
    return base, files


def test_startup_removes_staging_of_a_killed_export(staged_then_killed, tmp_path, monkeypatch):
    base, _files = staged_then_killed
    from appliance.app import build
    from appliance.config import load
    from web import create_app
    from web.viewer import export

    monkeypatch.setattr(export, "MEMORY_DIR", str(base))
    appliance = build(load(init_data_dir(tmp_path / "data"), env={}), with_web=False)
    try:
        create_app(appliance, {"TESTING": True})
    finally:
        appliance.index.close()
    assert not _plaintext_files(base)
    assert not list(base.iterdir())


def test_sweep_spares_a_running_export(staged_then_killed, tmp_path):
    base, files = staged_then_killed
    from web.viewer.export import media_zip, sweep_stale

    running = subprocess.Popen([sys.executable, "-c", CHILD, str(base), *map(str, files)], stdout=subprocess.PIPE,
                               text=True, env=dict(os.environ))
    try:
        assert running.stdout.readline().strip() == "staged"  # this export swept the killed one first
        alive = [p for p in base.iterdir()]
        assert len(alive) == 1
        assert sweep_stale(str(base)) == 0 and list(base.iterdir()) == alive
        # An export in this process works beside it and leaves nothing behind.
        out = media_zip(_Blobs(files), ["0", "1"], staging_base=str(base))
        assert out[:2] == b"PK" and list(base.iterdir()) == alive
    finally:
        running.kill()
        running.wait(10)
    assert sweep_stale(str(base)) == 1 and not list(base.iterdir())


class _Blobs:
    def __init__(self, files):
        self.blobs = [Path(p).read_bytes() for p in files]

    def read(self, object_id):
        return self.blobs[int(object_id)]
