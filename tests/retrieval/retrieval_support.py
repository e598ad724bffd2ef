"""Helpers for retrieval tests: the appliance CLI, dcmtk storescp, Orthanc, Part 10 byte comparisons."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "dicom"))  # readback

from helpers import (CLI, Server, StoreSCP, dataset_bytes, free_port, init_data_dir, port_open,  # noqa: E402,F401
                     wait_until)

SCU_AE = "TESTSCU"


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [*args[:2], "--data", str(data_dir), *args[2:]], capture_output=True, text=True,
                          timeout=60)


class Orthanc:
    def __init__(self, root: Path, appliance_port: int):
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.ae_title = "ORTHANC"
        root.mkdir(parents=True, exist_ok=True)
        (root / "db").mkdir(exist_ok=True)
        config = {
            "Name": "ORTHANC_TEST", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "Plugins": [], "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port, "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True, "DicomModalities": {"PACSBOX": ["PACSBOX", "127.0.0.1", appliance_port]},
            "StableAge": 1,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.proc = None

    def start(self) -> "Orthanc":
        log = open(self.root / "orthanc.log", "wb")
        self.proc = subprocess.Popen(["Orthanc", str(self.root / "orthanc.json")], stdout=log, stderr=log)
        wait_until(lambda: port_open(self.dicom_port) and port_open(self.http_port), 20, what="Orthanc")
        return self

    def get(self, path: str):
        import requests

        return requests.get(f"http://127.0.0.1:{self.http_port}{path}", timeout=10)

    def instance_ids(self) -> list[str]:
        return self.get("/instances").json()

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get(f"/instances/{orthanc_id}/file").content

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def have_orthanc() -> bool:
    return shutil.which("Orthanc") is not None


def read(path: Path):
    return pydicom.dcmread(path)


def start_box(root: Path, env: dict | None = None, peers: tuple = ()) -> Server:
    """A running appliance with TESTSCU registered (its C-MOVE port is ``box.scu_port``) plus ``peers``."""
    root.mkdir(parents=True, exist_ok=True)
    data_dir = init_data_dir(root / "data")
    scu_port = free_port()
    for ae, port in ((SCU_AE, scu_port), *peers):
        done = cli(data_dir, "modality", "add", ae, "127.0.0.1", str(port))
        assert done.returncode == 0, done.stderr
    srv = Server(data_dir, env=dict(env or {}))
    srv.scu_port = scu_port
    return srv.start()
