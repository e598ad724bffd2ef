"""Shared test helpers: free ports, polling, a real `pacs-appliance serve` process, dcmtk commands."""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pg_cluster

ADMIN_PASSWORD = "correct-horse-battery"
CLI = [sys.executable, "-m", "appliance"]


def _ports_outside_the_ephemeral_range():
    """Loopback ports below the kernel's ephemeral range, in turn from a per-process starting point.

    A port the kernel hands out with bind(0) comes from the ephemeral range, the same range every
    outgoing connection draws its local port from: between picking it and a server binding it,
    another socket can take it, and the server under test then binds nothing (or a test talks to
    the wrong process). Ports below that range are never assigned automatically, and taking them in
    turn means two picks of one run never collide.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first, last = 10000, low - 1
    if last - first < 1000:  # an unusual kernel setting: fall back to the kernel's choice
        while True:
            yield None
    span = last - first + 1
    start = first + (os.getpid() * 7919) % span
    offset = 0
    while True:
        yield first + (start - first + offset) % span
        offset += 1


_port_source = _ports_outside_the_ephemeral_range()


def free_port() -> int:
    """A loopback TCP port nothing listens on or uses now, and no other free_port() call of this run returns."""
    for candidate in _port_source:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate or 0))
            except OSError:
                continue
            return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (the one place tests wait)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def init_data_dir(path: Path, password: str = ADMIN_PASSWORD) -> Path:
    pw = path.parent / f"{path.name}.pw"
    pw.write_text(password)
    # On PostgreSQL (tests/pg_cluster.py) init writes the data directory's own index URL into its config.
    url = pg_cluster.fresh_url_if_active()
    env = dict(os.environ, PACS_INDEX_URL=url) if url else None
    subprocess.run(CLI + ["init", "--data", str(path), "--admin-password-file", str(pw)], check=True,
                   capture_output=True, env=env)
    return path


@dataclass
class Server:
    """A real appliance process on loopback ports."""

    data_dir: Path
    env: dict = field(default_factory=dict)
    ae_title: str = "PACSBOX"
    dicom_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 30.0) -> "Server":
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        env = dict(os.environ)
        env.update({
            "PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(self.dicom_port),
            "PACS_HTTP_HOST": "127.0.0.1", "PACS_HTTP_PORT": str(self.http_port),
            "PACS_STORAGE_RESERVE_MB": env.get("PACS_STORAGE_RESERVE_MB", "16"),
        })
        env.update(self.env)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-serve.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(CLI + ["serve", "--data", str(self.data_dir)], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.proc.poll() is not None or (port_open(self.dicom_port)
                                                                 and port_open(self.http_port)),
                       timeout, what="the appliance to listen")
        except TimeoutError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"appliance exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


# Debian's chromium as the tests launch it: headless, and quiet on this box's closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@contextmanager
def chromium():
    """A Playwright browser on Debian's chromium (the test is skipped when Playwright is missing)."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def tmpfs(mount_point: Path, size: str, mode: str = "0700"):
    """A tmpfs of ``size`` (e.g. "1m") mounted at ``mount_point`` (created), for a disk that really fills up;
    the test is skipped where mounting is not allowed (CI runs as root)."""
    import pytest

    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): run as root, as tests/run does in CI")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


class StoreSCP:
    """dcmtk storescp on a free loopback port, writing what it receives into a folder (its output in
    ``<folder>.log``); ``extra`` adds options, e.g. +tls."""

    def __init__(self, directory: Path, ae_title: str = "STORESCP", port: int | None = None,
                 accept_all: bool = True, extra: list[str] | None = None):
        self.directory, self.ae_title, self.port = directory, ae_title, port or free_port()
        self.args = ["storescp", "-aet", ae_title, "-od", str(directory)] + (["+xa"] if accept_all else []) \
            + list(extra or [])
        self.log = directory.parent / f"{directory.name}.log"
        self.proc = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> "StoreSCP":
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.args + [str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 10, what="storescp")
        if self.proc.poll() is not None:  # e.g. it could not bind its port: never let a test talk to another process
            raise RuntimeError(f"storescp exited with {self.proc.returncode}: {self.log.read_text(errors='replace')}")
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def run_cli(*args, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``pacs-appliance`` with ``args``; by default fail the test on a non-zero exit."""
    proc = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def dataset_bytes(part10: bytes) -> bytes:
    """The dataset part of a Part 10 file (what a C-STORE carries), without preamble and file meta:
    what must come back byte-identical, since a sender's file meta may legitimately be rewritten."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(part10)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return part10[fp.tell():]


def dcmtk(tool: str, *args: str, check: bool = False, timeout: float = 120, env: dict | None = None):
    """Run a dcmtk command line; return the CompletedProcess (stdout+stderr as text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=check,
                          env=full_env)


def storescu_acknowledged(storescu_log: str) -> set[str]:
    """SOP Instance UIDs that `storescu -d` saw answered with status Success (0x0000)."""
    acked, in_rsp, uid = set(), False, None
    for line in storescu_log.splitlines():
        if "Message Type" in line:
            in_rsp, uid = "C-STORE RSP" in line, None
        elif in_rsp and "Affected SOP Instance UID" in line:
            uid = line.rsplit(":", 1)[1].strip()
        elif in_rsp and "DIMSE Status" in line and re.search(r": 0x0000\b", line) and uid:
            acked.add(uid)
    return acked


def failed_imports(data_dir: Path) -> dict[str, tuple[str, bytes]]:
    """Name in the inbox -> (reason, content) of each failed import in the encrypted quarantine."""
    from appliance.archive import Archive, KeyStore
    from appliance.config import load

    cfg = load(data_dir, env={})
    quarantine = Archive(cfg.archive_dir, KeyStore(cfg.keys_dir).load()).quarantine()
    return {i.name: (i.reason, quarantine.read(i.item_id)) for i in quarantine.items()}
