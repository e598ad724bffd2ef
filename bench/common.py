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


def make_corpus(directory: Path, studies: int = 20, series: int = 2, per_series: int = 50) -> list[Path]:
    """The benchmark corpus: ``studies`` CT studies of ``series`` x ``per_series`` small instances.

    Reused when it already holds the expected number of files (generation takes a few seconds).
    """
    from tests.synth import write_study

    directory = Path(directory)
    expected = studies * series * per_series
    existing = sorted(directory.glob("s*/*.dcm"))
    if len(existing) == expected:
        return existing
    paths: list[Path] = []
    for s in range(studies):
        paths += write_study(directory / f"s{s:03d}", n_series=series, per_series=per_series, kind="CT",
                             patient_id=f"BENCH{s:05d}", patient_name=f"BENCH^PATIENT{s:03d}",
                             study_date=f"2026{1 + s % 12:02d}{1 + s % 28:02d}", accession=f"ACC{s:06d}")
    return sorted(paths)


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
