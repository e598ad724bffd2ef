"""The test suite needs no network: collecting it (and running the tests that use pydicom's
sample files) tries no connection beyond loopback.

Runs pytest in a fresh network namespace (only `lo`, so any outside request fails at once
instead of hanging) with an audit hook that records every attempted non-loopback
connection or name lookup; the run must record none.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GUARD = '''
import ipaddress, os, sys

_LOG = os.environ["NETGUARD_LOG"]
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "", None}


def _local(host):
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _record(what):
    with open(_LOG, "a") as log:
        log.write(what + "\\n")


def _hook(event, args):
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _local(address[0]):
            _record(f"connect {address!r}")
    elif event == "socket.getaddrinfo" and not _local(args[0]):
        _record(f"getaddrinfo {args[0]!r}")


sys.addaudithook(_hook)
'''


def _isolated(command: list[str]) -> list[str]:
    """`command` in a new network namespace with only loopback up."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to cut the network for this test")
    user_ns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--net", *user_ns, "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh", *command]


def _run_guarded(tmp_path: Path, *pytest_args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (tmp_path / "netguard.py").write_text(GUARD)
    log = tmp_path / "network-attempts.log"
    env = dict(os.environ, NETGUARD_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "pytest", "-p", "netguard", "-p", "no:cacheprovider", "-q", *pytest_args]
    result = subprocess.run(_isolated(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    attempts = log.read_text().splitlines() if log.exists() else []
    return result, attempts


def test_the_guard_sees_a_network_attempt(tmp_path):
    """The check below would catch a download: a test that looks up a host is recorded."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("import socket, pytest\n"
                     "def test_lookup():\n"
                     "    with pytest.raises(OSError):\n"
                     "        socket.create_connection(('example.org', 443), timeout=2)\n")
    result, attempts = _run_guarded(tmp_path, str(probe))
    assert result.returncode == 0, result.stdout + result.stderr
    assert attempts == ["getaddrinfo 'example.org'"]


def test_collecting_the_suite_and_the_sample_file_tests_need_no_network(tmp_path):
    result, attempts = _run_guarded(tmp_path, "tests", "--collect-only",
                                    "--deselect", "tests/test_hermetic.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "download failure" not in result.stdout + result.stderr
    assert attempts == [], f"network attempts while collecting: {attempts[:20]}"

    result, attempts = _run_guarded(tmp_path, "tests/index/test_parse_fidelity.py", "-W", "error::UserWarning")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert attempts == [], f"network attempts while running the sample-file tests: {attempts[:20]}"
