"""The receivers compared by the ingest benchmark, each started fresh on a loopback port.

* ``appliance``: ``pacs-appliance serve`` on a copy of a data directory made once by ``init``;
* ``bare``: bench/bare_scp.py (pynetdicom, write + fsync, nothing else): the Python ceiling;
* ``orthanc``: the Debian ``Orthanc`` binary with its SQLite index and a JSON config of our own.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from common import PYTHON, ROOT, free_port, sender_env, stop, wait_port

ADMIN_PASSWORD = "bench-admin-password"


class Receiver:
    name = ""
    ae_title = ""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._log = None

    def start(self, tag: str) -> "Receiver":
        raise NotImplementedError

    def _spawn(self, cmd: list[str], env: dict, tag: str) -> None:
        self.port = self.port or free_port()
        self._log = open(self.workdir / f"{self.name}-{tag}.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)
        wait_port(self.proc, self.port, self.name)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None
        self.port = 0
        if self._log:
            self._log.close()


class Appliance(Receiver):
    name = "appliance"
    ae_title = "PACSBOX"

    def __init__(self, workdir: Path, env: dict | None = None, name: str = "appliance", root: Path = ROOT):
        """``root`` is the checkout the server runs from: another one (a ``git worktree`` of an older
        commit) gives before/after figures in one interleaved run."""
        super().__init__(workdir)
        self.name = name
        self.extra_env = dict(env or {})
        self.extra_env["PYTHONPATH"] = str(root)  # always: the server runs in workdir, and without it
        # this checkout would be served from wherever the venv's editable install points
        self.template = self.workdir / f"{name}-template"
        if not self.template.exists():
            pw = self.workdir / "admin.pw"
            pw.write_text(ADMIN_PASSWORD)
            subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(self.template),
                            "--admin-password-file", str(pw)], check=True, capture_output=True, cwd=root,
                           env={**os.environ, **self.extra_env})

    def start(self, tag: str) -> "Appliance":
        data = self.workdir / f"{self.name}-{tag}"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(self.template, data, symlinks=True)
        self.port = free_port()
        env = sender_env(nodelay=False)  # the appliance tunes its own sockets
        env.update({"PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(self.port),
                    "PACS_HTTP_HOST": "127.0.0.1", "PACS_HTTP_PORT": str(free_port()),
                    "PACS_STORAGE_RESERVE_MB": "16"})
        env.update(self.extra_env)
        self._spawn([PYTHON, "-m", "appliance", "serve", "--data", str(data)], env, tag)
        return self


class BareScp(Receiver):
    name = "bare-pynetdicom"
    ae_title = "BARESCP"

    def __init__(self, workdir: Path, tune: bool = False):
        super().__init__(workdir)
        self.tune = tune
        if tune:
            self.name = "bare-pynetdicom-tuned"

    def start(self, tag: str) -> "BareScp":
        out = self.workdir / f"{self.name}-{tag}"
        shutil.rmtree(out, ignore_errors=True)
        self.port = free_port()
        cmd = [PYTHON, str(ROOT / "bench" / "bare_scp.py"), "--port", str(self.port), "--dir", str(out)]
        self._spawn(cmd + (["--tune"] if self.tune else []), sender_env(nodelay=False), tag)
        return self


class Orthanc(Receiver):
    name = "orthanc"
    ae_title = "ORTHANC"

    def start(self, tag: str) -> "Orthanc":
        storage = self.workdir / f"orthanc-{tag}"
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
        self.port = free_port()
        config = {
            "Name": "BENCH", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpServerEnabled": False, "RemoteAccessAllowed": False,
            "DicomServerEnabled": True, "DicomAet": self.ae_title, "DicomPort": self.port,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True, "Plugins": [],
        }
        path = self.workdir / f"orthanc-{tag}.json"
        path.write_text(json.dumps(config, indent=1))
        # TCP_NODELAY=1 makes Orthanc's dcmtk network layer disable Nagle (its fastest setting).
        self._spawn([shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(path)], sender_env(nodelay=True), tag)
        return self
