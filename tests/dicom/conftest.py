"""Fixtures for the DICOM core tests: a server shared by a module, and dcmtk's storescp as a reference peer."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import Server, free_port, init_data_dir, port_open, wait_until


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory) -> Path:
    return init_data_dir(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture(scope="module")
def shared_server(shared_data_dir):
    """One running appliance for every test of a module (tests use distinct synthetic patients)."""
    srv = Server(shared_data_dir).start()
    yield srv
    srv.kill()


class ReferenceScp:
    """dcmtk's storescp in bit-preserving mode: writes each dataset exactly as it came off the wire."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.port = free_port()
        out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["storescp", "+B", "+xa", "-aet", "PACSBOX", "-od", str(out_dir),
                                      "+uf", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 10, what="storescp to listen")

    def received(self) -> dict[str, bytes]:
        """SOP Instance UID -> the Part 10 file storescp wrote."""
        import pydicom

        out = {}
        for path in self.out_dir.iterdir():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            out[str(ds.SOPInstanceUID)] = path.read_bytes()
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def reference_scp(tmp_path):
    scp = ReferenceScp(tmp_path / "reference")
    yield scp
    scp.close()
