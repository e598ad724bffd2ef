"""A throwaway PostgreSQL cluster for the tests: Debian's postgresql, on loopback, in a temporary directory.

``PACS_TEST_INDEX=postgresql`` (tests/run sets it for its second pass) makes the test session start
one cluster; every index then gets a schema of its own in it (``fresh_url``), so tests stay independent
without paying for a database each. The cluster runs as the ``postgres`` user (initdb refuses root),
with fsync off: it is thrown away with the session.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ACTIVE: "Cluster | None" = None  # the session's cluster (set by tests/conftest.py), for helpers.init_data_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> list[str]:
    return list(cmd) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *cmd]


class Cluster:
    def __init__(self, root: Path, fsync: bool = False):
        self.root = root
        self.data = root / "data"
        self.fsync = fsync  # the tests throw theirs away; a benchmark's should cost what a real one does
        self.port = _free_port()
        self.base_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Cluster":
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"{PG_BIN}/initdb missing: install Debian's postgresql (tests/run does)")
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():  # a kept cluster (bench/pgbox.py) starts again as it was
            subprocess.run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                        "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"),
                           check=True, capture_output=True)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
                   + ("" if self.fsync else " -F"))
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                    "-o", options, "-w", "start"), check=True, capture_output=True)
        return self

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"),
                       capture_output=True)

    def fresh_url(self) -> str:
        """The URL of a new, empty schema (the search path of every connection made with it)."""
        import psycopg

        schema = "t" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.base_url}?options=-csearch_path%3D{schema}"


def fresh_url_if_active() -> str:
    """A new index URL on the session's cluster, or '' when the tests run on the embedded index."""
    return ACTIVE.fresh_url() if ACTIVE is not None else ""
