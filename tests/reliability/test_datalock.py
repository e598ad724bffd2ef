"""Issue 15: `index rebuild` rewrites the index file, so it refuses while `serve` holds the data directory
(and names the process), and `serve` refuses while a rebuild holds it. Real `serve`, real CLI."""
from __future__ import annotations

import os

import pytest

from helpers import Server, run_cli

from appliance.datalock import DataDirBusy, hold


@pytest.mark.sqlcipher  # `index rebuild` is the embedded index's; on PostgreSQL it refuses before the lock (test_postgres_index.py)
def test_rebuild_refuses_while_serve_holds_the_data_directory(data_dir):
    server = Server(data_dir).start(timeout=60)
    try:
        refused = run_cli("index", "rebuild", "--data", data_dir, check=False)
        assert refused.returncode == 75, refused.stdout + refused.stderr
        assert f"process {server.proc.pid} (serve)" in refused.stderr
        assert "stop the service first" in refused.stderr
        assert not (data_dir / "index.db.rebuild").exists()  # nothing was started
    finally:
        assert server.stop(timeout=60) == 0, server.log()

    done = run_cli("index", "rebuild", "--data", data_dir)  # the lock went with the process
    assert "index rebuilt" in done.stdout


def test_serve_refuses_while_the_data_directory_is_held(data_dir):
    fd = hold(data_dir, "index rebuild")
    try:
        with pytest.raises(RuntimeError) as exc:
            Server(data_dir).start(timeout=60)
        assert f"process {os.getpid()} (index rebuild)" in str(exc.value)
        with pytest.raises(DataDirBusy):  # a second holder in this process too (one open file each)
            os.close(hold(data_dir, "serve"))
    finally:
        os.close(fd)
    server = Server(data_dir).start(timeout=60)
    assert server.stop(timeout=60) == 0, server.log()
