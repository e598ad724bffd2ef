"""Shared pieces of the benchmarks: the synthetic corpus, process start/stop, timing statistics.

Everything binds to 127.0.0.1 and lives in a temporary directory; nothing here is
imported by the appliance or its tests.
"""
from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests/synth.py (the one synthetic-data generator)

PYTHON = sys.executable
CALLING_AE = "BENCHSCU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(proc: subprocess.Popen, port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on port {port} within {timeout} s")
        time.sleep(0.05)


def wait_idle(pid: int, timeout: float = 300, window: float = 1.0, busy: float = 0.05) -> float:
    """Wait until the process used under ``busy`` of a core over ``window`` seconds; return the seconds waited.

    A big box listens before its start-up work ends (reconciliation and the index quick check run
    beside the listener above 50,000 objects): measuring before it settles measures that work too,
    which an older server did before it listened."""
    started = time.monotonic()
    last = cpu_seconds(pid) or 0.0
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now is None or now - last < busy * window:
            break
        last = now
    return time.monotonic() - started


def stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a live process: its peak resident set since it started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


KINDS_IN_TURN = ("CT", "MR", "US")  # CT_small 39 KB, MR_small 10 KB, examples_rgb_color 232 KB


def make_corpus(directory: Path, studies: int = 20, series: int = 2, per_series: int = 50,
                kind: str = "mixed", large: bool = True) -> list[Path]:
    """The benchmark corpus: ``studies`` studies of ``series`` x ``per_series`` instances.

    ``kind="mixed"`` (the default, what a clinic sends) makes the studies CT, MR and ultrasound
    in turn, and ``large`` adds the big objects a clinic also sends: five 1,024 x 1,024 16-bit DX
    images (2 MB each) and two uncompressed 40-frame RGB ultrasound cines (9 MB each).
    A corpus of small CT files alone flatters a Python receiver (fewer PDUs and bytes per
    instance); ``kind="CT"`` is kept for comparisons with older figures.
    Reused when the directory already holds the expected files (generation takes a few seconds).
    """
    from tests.synth import write_study

    directory = Path(directory) / (f"{kind}-large" if large else kind)
    extra = 7 if large else 0
    expected = studies * series * per_series + extra
    existing = sorted(directory.glob("s*/*.dcm"))
    if len(existing) == expected:
        return existing
    paths: list[Path] = []
    for s in range(studies):
        k = KINDS_IN_TURN[s % len(KINDS_IN_TURN)] if kind == "mixed" else kind
        paths += write_study(directory / f"s{s:03d}", n_series=series, per_series=per_series, kind=k,
                             patient_id=f"BENCH{s:05d}", patient_name=f"BENCH^PATIENT{s:03d}",
                             study_date=f"2026{1 + s % 12:02d}{1 + s % 28:02d}", accession=f"ACC{s:06d}")
    if large:
        paths += _large_objects(directory / "s999")
    return sorted(paths)


def _large_objects(directory: Path) -> list[Path]:
    """Five ~2 MB DX images and two ~9 MB multi-frame ultrasound cines, in one synthetic study."""
    import numpy as np
    from pydicom.uid import generate_uid
    from tests.synth import make_instance

    directory.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    identity = dict(patient_id="BENCHLARGE", patient_name="BENCH^LARGE", study_uid=study, study_date="20260615")
    paths = []
    dx_series, us_series = generate_uid(), generate_uid()
    for i in range(5):  # Digital X-Ray: 1,024 x 1,024 16-bit, 2 MiB of pixels
        ds = make_instance("CT", series_uid=dx_series, instance_number=i + 1, modality="DX", **identity)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        ramp = (np.add.outer(np.arange(1024), np.arange(1024)) * (i + 1)) % 4096
        ds.Rows = ds.Columns = 1024
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = ramp.astype("<u2").tobytes()
        paths.append(_save(ds, directory))
    for i in range(2):  # ultrasound cine: 40 frames of 240 x 320 RGB, 9 MB
        ds = make_instance("US", series_uid=us_series, instance_number=i + 1, **identity)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
        frame = ds.PixelData
        ds.NumberOfFrames = 40
        ds.FrameTime = "33.3"
        ds.FrameIncrementPointer = 0x00181063
        ds.PixelData = frame * 40
        paths.append(_save(ds, directory))
    return paths


def _save(ds, directory: Path) -> Path:
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def sender_env(nodelay: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def summarize(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.0f}"
    return f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def summarize_ms(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.1f} ({min(values):.1f}-{max(values):.1f})"
