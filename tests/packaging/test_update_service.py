"""Installing updates (appliance/update/service.py): every way in (admin upload, USB stick,
scheduled pull) runs the same bundle check and refuses a tampered bundle; confirmation
after boot keeps a ready new root and falls back from one that is not.

Real signed bundles, a real HTTP server and a real mount; only `rauc install` and the
reboot are stand-ins (writing a root partition and rebooting cannot happen here; the
slow qemu tests do both for real).
"""
from __future__ import annotations

import datetime
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from appliance.update.bundle import BundleRefused  # noqa: E402
from appliance.update.service import (System, UpdatePaths, confirm, in_window, install,  # noqa: E402
                                      install_from_usb, install_incoming, pull)
from update_helpers import make_bundle, make_key  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("rauc") is None or shutil.which("unsquashfs") is None,
                                reason="needs rauc and squashfs-tools (tests/run installs them)")
BOOT_SLOT = Path(__file__).resolve().parents[2] / "image-build" / "rootfs" / "boot-slot"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    key, cert = make_key(d)
    good = make_bundle(d, key, cert, "0.2.0")
    data = bytearray(good.read_bytes())
    data[300_000] ^= 0xFF
    tampered = d / "tampered.raucb"
    tampered.write_bytes(bytes(data))
    return {"cert": cert, "good": good, "tampered": tampered}


class Box:
    """The parts of System that would touch the real box, recorded instead (see module docstring)."""

    def __init__(self, tmp_path: Path, cert: Path, booted: str = "A", version: str = "0.1.0"):
        self.commands: list[list[str]] = []
        self.reboots = 0
        self.now = 0.0
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cmdline").write_text(f"root=PARTUUID=x rw rauc.slot={booted} quiet\n")
        (tmp_path / "image-version").write_text(version + "\n")
        self.system = System(paths=UpdatePaths(tmp_path / "var"), keyring=cert, cmdline=tmp_path / "cmdline",
                             version_file=tmp_path / "image-version", run=self.run, reboot=self.reboot,
                             sleep=self.sleep, clock=lambda: self.now)

    def run(self, cmd, **kwargs):
        if cmd[0] in ("mount", "umount"):
            return subprocess.run(cmd, **kwargs)  # real mounts
        self.commands.append(list(cmd))
        if cmd[1] == "install":
            assert Path(cmd[2]).exists(), "the bundle must still be there while rauc installs it"
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def reboot(self):
        self.reboots += 1

    def sleep(self, seconds):
        self.now += seconds

    def status(self) -> dict:
        return json.loads(self.system.paths.status_file.read_text())

    def installs(self) -> list[list[str]]:
        return [c for c in self.commands if c[1] == "install"]


def test_install_writes_the_other_slot_remembers_it_and_reboots(bundles, tmp_path):
    box = Box(tmp_path, bundles["cert"], booted="A")
    info = install(box.system, bundles["good"])
    assert info.version == "0.2.0" and len(box.installs()) == 1 and box.reboots == 1
    pending = json.loads(box.system.paths.pending_file.read_text())
    assert (pending["slot"], pending["version"], pending["from_slot"], pending["from_version"]) == \
        ("B", "0.2.0", "A", "0.1.0")
    assert oct(box.system.paths.pending_file.stat().st_mode & 0o777) == "0o644"  # the admin page shows it
    assert box.status()["state"] == "installed"
    assert not box.system.paths.staged_bundle.exists()


def test_admin_upload_installs_the_newest_and_refuses_a_tampered_one(bundles, tmp_path):
    box = Box(tmp_path, bundles["cert"], booted="B")
    incoming = box.system.paths.incoming_dir
    incoming.mkdir(parents=True)
    shutil.copy(bundles["tampered"], incoming / "upload.raucb")
    with pytest.raises(BundleRefused, match="damaged or was changed after signing"):
        install_incoming(box.system)
    assert box.installs() == [] and box.reboots == 0 and box.status()["state"] == "refused"
    assert list(incoming.iterdir()) == []
    shutil.copy(bundles["good"], incoming / "upload.raucb")
    assert install_incoming(box.system).version == "0.2.0"
    assert json.loads(box.system.paths.pending_file.read_text())["slot"] == "A"
    assert install_incoming(box.system) is None  # consumed


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the stick needs root")
@pytest.mark.parametrize("which, refused", [("good", False), ("tampered", True)])
def test_usb_stick(bundles, tmp_path, which, refused):
    stick_tree = tmp_path / "stick"
    stick_tree.mkdir()
    shutil.copy(bundles[which], stick_tree / "pacs-update.raucb")
    stick = tmp_path / "stick.img"
    subprocess.run(["mkfs.ext4", "-q", "-L", "PACSUPDATE", "-d", str(stick_tree), str(stick), "8M"], check=True)
    box = Box(tmp_path, bundles["cert"])
    if refused:
        with pytest.raises(BundleRefused):
            install_from_usb(box.system, str(stick))
        assert box.installs() == [] and box.status()["state"] == "refused"
    else:
        assert install_from_usb(box.system, str(stick)).version == "0.2.0"
        assert len(box.installs()) == 1 and box.status()["source"].startswith("USB stick")


@pytest.fixture
def vendor_server(tmp_path):
    """A vendor download server on loopback that serves files with ETags and answers If-None-Match."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path = root / self.path.lstrip("/")
            requests.append(self.path)
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            etag = f'"{hash(body) & 0xFFFFFFFF:x}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_scheduled_pull_installs_a_new_version_once_and_refuses_a_tampered_one(bundles, tmp_path, vendor_server):
    www, base, requests = vendor_server
    box = Box(tmp_path, bundles["cert"], version="0.1.0")
    shutil.copy(bundles["tampered"], www / "stable.raucb")
    with pytest.raises(BundleRefused):
        pull(box.system, f"{base}/stable.raucb")
    assert box.installs() == [] and box.status()["state"] == "refused"

    shutil.copy(bundles["good"], www / "stable.raucb")
    assert pull(box.system, f"{base}/stable.raucb").version == "0.2.0"
    assert len(box.installs()) == 1 and box.reboots == 1
    assert pull(box.system, f"{base}/stable.raucb") is None  # unchanged: 304, nothing downloaded again
    assert len(box.installs()) == 1

    current = Box(tmp_path / "current", bundles["cert"], version="0.2.0")
    assert pull(current.system, f"{base}/stable.raucb") is None  # already running that version
    assert current.installs() == []


def test_pull_from_an_unreachable_server_says_so(bundles, tmp_path):
    from appliance.update.service import UpdateError

    box = Box(tmp_path, bundles["cert"])
    with pytest.raises(UpdateError, match="download of http://127.0.0.1:9/x.raucb failed"):
        pull(box.system, "http://127.0.0.1:9/x.raucb", timeout=5)
    assert box.status()["state"] == "failed"


def pending_box(tmp_path, cert, booted: str) -> Box:
    box = Box(tmp_path, cert, booted=booted, version="0.2.0" if booted == "B" else "0.1.0")
    box.system.paths.state_dir.mkdir(parents=True)
    box.system.paths.pending_file.write_text(json.dumps({"version": "0.2.0", "slot": "B", "from_version": "0.1.0",
                                                          "from_slot": "A"}))
    return box


def test_confirm_keeps_a_new_root_that_becomes_ready(bundles, tmp_path):
    box = pending_box(tmp_path, bundles["cert"], booted="B")
    answers = iter([False, False, True])
    status = confirm(box.system, lambda: next(answers), timeout=600, poll=5)
    assert status["state"] == "updated" and box.reboots == 0
    assert box.commands == [["rauc", "status", "mark-good"]]
    assert not box.system.paths.pending_file.exists()


def test_confirm_falls_back_from_a_new_root_that_never_becomes_ready(bundles, tmp_path):
    box = pending_box(tmp_path, bundles["cert"], booted="B")
    status = confirm(box.system, lambda: False, timeout=120, poll=5)
    assert status["state"] == "falling back" and box.reboots == 1
    assert box.commands == [["rauc", "status", "mark-bad"]]
    assert box.now >= 120


def test_confirm_after_a_fallback_records_it_and_never_tries_the_bad_root_again(bundles, tmp_path):
    box = pending_box(tmp_path, bundles["cert"], booted="A")
    status = confirm(box.system, lambda: pytest.fail("not asked: the new root is not running"), timeout=600)
    assert status["state"] == "fell back" and status["failed_version"] == "0.2.0" and box.reboots == 0
    assert box.commands == [["rauc", "status", "mark-bad", "other"]]
    assert not box.system.paths.pending_file.exists()
    assert confirm(box.system, lambda: True, timeout=600) == {"state": "nothing pending"}


def test_update_window():
    at = lambda hh, mm: datetime.datetime(2026, 1, 1, hh, mm)  # noqa: E731
    assert in_window("02:00-04:00", at(3, 0)) and not in_window("02:00-04:00", at(4, 0))
    assert in_window("23:00-01:00", at(0, 30)) and not in_window("23:00-01:00", at(12, 0))
    assert in_window("", at(12, 0))


@pytest.mark.skipif(shutil.which("grub-editenv") is None, reason="needs grub-editenv (grub-common)")
def test_boot_slot_backend_gives_a_new_slot_one_trial(tmp_path):
    env = dict(os.environ, PACS_GRUBENV=str(tmp_path / "grubenv"))
    subprocess.run(["grub-editenv", env["PACS_GRUBENV"], "create"], check=True)
    subprocess.run(["grub-editenv", env["PACS_GRUBENV"], "set", "ORDER=A B", "A_OK=1", "B_OK=0"], check=True)

    def slot(*args) -> str:
        return subprocess.run([str(BOOT_SLOT), *args], env=env, capture_output=True, text=True, check=True).stdout.strip()

    def grubenv() -> dict:
        out = subprocess.run(["grub-editenv", env["PACS_GRUBENV"], "list"], capture_output=True, text=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    assert (slot("get-primary"), slot("get-state", "A"), slot("get-state", "B")) == ("A", "good", "bad")
    slot("set-state", "B", "bad")  # RAUC: before writing B
    slot("set-primary", "B")  # RAUC: B written
    assert grubenv()["ORDER"] == "B A" and (grubenv()["B_TRIAL"], grubenv()["B_TRIED"]) == ("1", "0")
    assert slot("get-state", "B") == "bad"  # on trial until confirmed
    slot("set-state", "B", "good")  # confirmed
    assert slot("get-state", "B") == "good" and grubenv()["B_TRIAL"] == "0"
    assert subprocess.run([str(BOOT_SLOT), "set-state", "C", "good"], env=env, capture_output=True).returncode == 2


def test_confirm_after_an_interrupted_install_says_so(bundles, tmp_path):
    box = Box(tmp_path, bundles["cert"], booted="A")
    box.system.paths.state_dir.mkdir(parents=True)
    box.system.paths.status_file.write_text(json.dumps({"state": "installing", "version": "0.2.0"}))
    status = confirm(box.system, lambda: True, timeout=600)
    assert status["state"] == "interrupted" and "0.2.0 was interrupted" in status["message"]
    assert box.commands == [] and box.reboots == 0
