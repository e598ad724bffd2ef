"""glibc malloc tuning for `serve` (appliance/malloc.py): one arena for every thread, so it must come first.

Session 6's soak found six malloc arenas in a server that asked for one: `serve` tuned glibc after
`build` had started threads, and a thread that allocated before the call keeps an arena of its own.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from appliance import malloc

pytestmark = pytest.mark.skipif(malloc.arenas() is None, reason="glibc only")

THREADS_AFTER_TUNE = """
import threading
from appliance import malloc
assert malloc.tune()
def work():
    held = [bytearray(1000) for _ in range(2000)]
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(malloc.arenas())
"""


def test_threads_started_after_tune_share_the_one_arena():
    done = subprocess.run([sys.executable, "-c", THREADS_AFTER_TUNE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(malloc.ARENAS)


def test_serve_tunes_malloc_before_anything_else(monkeypatch, tmp_path):
    import appliance.cli as cli

    calls = []

    class Stop(Exception):
        pass

    def resolve(_data_dir):
        calls.append("resolve")
        raise Stop

    monkeypatch.setattr(malloc, "tune", lambda *a, **k: calls.append("tune") or True)
    monkeypatch.setattr(cli, "resolve_data_dir", resolve)
    result = CliRunner().invoke(cli.main, ["serve", "--data", str(tmp_path / "data")])
    assert isinstance(result.exception, Stop)
    assert calls == ["tune", "resolve"]
