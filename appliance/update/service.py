"""Installing a checked bundle into the other root slot, and confirming or falling back after.

Runs as root on the box (``pacs-appliance update ...`` from systemd units); the web
app only drops uploads into ``<data>/update-incoming`` after checking them with
the same ``bundle.verify``.

Slots: A = partition 3, B = partition 4 (image-build/rootfs/rauc-system.conf). RAUC
writes the slot we are not running from, then makes it the preferred one for one
try (image-build/rootfs/boot-slot, grub.cfg). ``pending.json`` (root-only, on the
data partition) remembers what was installed; on the next boot ``confirm``:

* booted the new slot: wait until the service is ready (systemd says active, which
  for Type=notify means READY=1 was sent, and /healthz answers ok), then mark the
  slot good; not ready within ``[update] confirm_timeout_s``: mark it bad and
  reboot, so the box comes back on the previous root by itself;
* booted the old slot although an update was pending (the new one failed, hung or
  lost power before it was confirmed): record the fallback.
The data and vendor config partitions are never written by any of this.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..archive.fsutil import write_file_atomic
from ..errors import ApplianceError
from .bundle import BUNDLE_SUFFIX, KEYRING, BundleInfo, BundleRefused, Tools, verify

SLOTS = ("A", "B")
VERSION_FILE = Path("/usr/lib/pacs-appliance/image-version")


class UpdateError(ApplianceError):
    exit_code = 5


@dataclass(frozen=True)
class UpdatePaths:
    """Where update state lives (``root`` = the data partition's mount point)."""

    root: Path = Path("/var/lib/pacs-appliance")

    @property
    def state_dir(self) -> Path:  # written by root only: the bundle being installed (0600), pending and status
        return self.root / "update"

    @property
    def incoming_dir(self) -> Path:  # written by the web app (user pacs): uploads waiting to be installed
        return self.root / "data" / "update-incoming"

    @property
    def pending_file(self) -> Path:
        return self.state_dir / "pending.json"

    @property
    def status_file(self) -> Path:  # readable by the web app: what happened last
        return self.state_dir / "status.json"

    @property
    def staged_bundle(self) -> Path:
        return self.state_dir / f"bundle{BUNDLE_SUFFIX}"


@dataclass
class System:
    """The box around the update: commands and files, replaceable in tests."""

    paths: UpdatePaths = field(default_factory=UpdatePaths)
    keyring: Path = KEYRING
    tools: Tools = field(default_factory=Tools)
    cmdline: Path = Path("/proc/cmdline")
    version_file: Path = VERSION_FILE
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    reboot: Callable[[], None] = lambda: subprocess.run(["systemctl", "reboot"], check=False)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def booted_slot(self) -> str:
        for word in self.cmdline.read_text().split():
            if word.startswith("rauc.slot="):
                return word.split("=", 1)[1]
        raise UpdateError(f"no rauc.slot= on the kernel command line ({self.cmdline}): not booted as an A/B box")

    def running_version(self) -> str:
        try:
            return self.version_file.read_text().strip()
        except OSError:
            return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, json.dumps(data, indent=1).encode("utf-8"), mode)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def record(system: System, state: str, message: str, **extra) -> dict:
    status = {"state": state, "message": message, "at": _now(), **extra}
    _write_json(system.paths.status_file, status)
    return status


# ------------------------------------------------------------------ install

def install(system: System, bundle: Path, *, reboot: bool = True, source: str = "command line") -> BundleInfo:
    """Check ``bundle`` and write it to the other slot; then reboot into it (one try)."""
    paths = system.paths
    paths.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    staged = paths.staged_bundle
    if Path(bundle).resolve() != staged.resolve():
        # A root-owned copy: nobody else can change it between the check and the install.
        tmp = staged.with_name(staged.name + ".partial")
        shutil.copyfile(bundle, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, staged)
    try:
        info = verify(staged, keyring=system.keyring, tools=system.tools)
    except BundleRefused as exc:
        record(system, "refused", str(exc), source=source)
        staged.unlink(missing_ok=True)
        raise
    booted = system.booted_slot()
    target = SLOTS[1 - SLOTS.index(booted)]
    record(system, "installing", f"installing {info.version} into slot {target} (from {source})",
           version=info.version, slot=target, source=source)
    started = system.clock()
    result = system.run([system.tools.rauc, "install", str(staged)], capture_output=True, text=True)
    staged.unlink(missing_ok=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["rauc failed"]
        record(system, "failed", f"installing {info.version} failed: {detail[0]}", source=source)
        raise UpdateError(f"installing {info.version} failed: {detail[0]}")
    seconds = round(system.clock() - started, 1)
    _write_json(paths.pending_file, {"version": info.version, "slot": target, "from_version": system.running_version(),
                                     "from_slot": booted, "installed_at": _now(), "install_seconds": seconds,
                                     "source": source}, mode=0o644)
    record(system, "installed", f"{info.version} written to slot {target} in {seconds} s; "
           + ("rebooting into it" if reboot else "it starts at the next reboot"),
           version=info.version, slot=target, install_seconds=seconds, source=source)
    if reboot:
        system.reboot()
    return info


def install_incoming(system: System, *, reboot: bool = True) -> BundleInfo | None:
    """Install the newest complete upload in ``<data>/update-incoming`` (others are dropped)."""
    incoming = system.paths.incoming_dir
    bundles = sorted(incoming.glob(f"*{BUNDLE_SUFFIX}"), key=lambda p: p.stat().st_mtime) if incoming.is_dir() else []
    if not bundles:
        return None
    newest = bundles[-1]
    try:
        return install(system, newest, reboot=reboot, source="admin upload")
    finally:
        for path in bundles:
            path.unlink(missing_ok=True)


def install_from_usb(system: System, device: str, *, reboot: bool = True) -> BundleInfo | None:
    """Mount a USB stick read-only and install the bundle in its top folder."""
    with tempfile.TemporaryDirectory(prefix="pacs-usb-") as mnt:
        mounted = system.run(["mount", "-o", "ro,nosuid,nodev,noexec", device, mnt], capture_output=True, text=True)
        if mounted.returncode != 0:
            raise UpdateError(f"cannot mount {device}: {mounted.stderr.strip()}")
        try:
            bundles = sorted(Path(mnt).glob(f"*{BUNDLE_SUFFIX}"))
            if len(bundles) != 1:
                record(system, "refused", f"USB stick {device}: expected exactly one *{BUNDLE_SUFFIX} file in its "
                       f"top folder, found {len(bundles)}", source="usb")
                return None
            system.paths.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            shutil.copyfile(bundles[0], system.paths.staged_bundle)
            os.chmod(system.paths.staged_bundle, 0o600)
        finally:
            system.run(["umount", mnt], capture_output=True)
    return install(system, system.paths.staged_bundle, reboot=reboot, source=f"USB stick {device}")


def pull(system: System, url: str, *, reboot: bool = True, timeout: float = 60,
         context: ssl.SSLContext | None = None) -> BundleInfo | None:
    """Download the bundle at ``url`` (if it changed since last time) and install it if its version is new."""
    paths = system.paths
    paths.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    state_file = paths.state_dir / "pull.json"
    state = read_json(state_file) or {}
    request = urllib.request.Request(url, headers={"User-Agent": "pacs-appliance-update"})
    if state.get("url") == url and state.get("etag"):
        request.add_header("If-None-Match", state["etag"])
    partial = paths.staged_bundle.with_name("download.partial")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
            etag = response.headers.get("ETag", "")
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        if exc.code == 304:
            return None
        record(system, "failed", f"download of {url} failed: HTTP {exc.code}", source="schedule")
        raise UpdateError(f"download of {url} failed: HTTP {exc.code}") from None
    except (OSError, urllib.error.URLError) as exc:
        partial.unlink(missing_ok=True)
        record(system, "failed", f"download of {url} failed: {exc}", source="schedule")
        raise UpdateError(f"download of {url} failed: {exc}") from None
    os.chmod(partial, 0o600)
    os.replace(partial, paths.staged_bundle)
    try:
        info = verify(paths.staged_bundle, keyring=system.keyring, tools=system.tools)
    except BundleRefused as exc:
        record(system, "refused", str(exc), source="schedule")
        paths.staged_bundle.unlink(missing_ok=True)
        raise
    _write_json(state_file, {"url": url, "etag": etag, "version": info.version, "at": _now()}, mode=0o600)
    if info.version == system.running_version():
        paths.staged_bundle.unlink(missing_ok=True)
        return None
    return install(system, paths.staged_bundle, reboot=reboot, source=f"schedule ({url})")


def in_window(window: str, now: datetime.datetime) -> bool:
    """Whether ``now`` (local time) is inside "HH:MM-HH:MM" (may wrap past midnight); empty = always."""
    if not window.strip():
        return True
    start_text, _, end_text = window.partition("-")
    start = datetime.time.fromisoformat(start_text.strip())
    end = datetime.time.fromisoformat(end_text.strip())
    t = now.time()
    return start <= t < end if start <= end else (t >= start or t < end)


# ------------------------------------------------------------------ confirm

def confirm(system: System, ready: Callable[[], bool], timeout: float, poll: float = 5.0) -> dict:
    """After boot: keep a new root that becomes ready in time, else fall back to the previous one."""
    pending = read_json(system.paths.pending_file)
    if pending is None:
        last = read_json(system.paths.status_file) or {}
        if last.get("state") == "installing":  # power cut or crash while the slot was being written
            return record(system, "interrupted", f"installing {last.get('version')} was interrupted (power cut?); "
                          f"still running {system.running_version()}: install it again", version=system.running_version())
        return {"state": "nothing pending"}
    booted = system.booted_slot()
    rauc = system.tools.rauc
    if booted != pending["slot"]:
        # The new root was not confirmed before this boot (not ready, hung, power cut): the boot
        # script skipped it. Make sure it is not tried again, and say what happened.
        system.run([rauc, "status", "mark-bad", "other"], capture_output=True, text=True)
        system.paths.pending_file.unlink(missing_ok=True)
        return record(system, "fell back", f"{pending['version']} in slot {pending['slot']} did not start; back on "
                      f"{system.running_version()} in slot {booted}", version=system.running_version(), slot=booted,
                      failed_version=pending["version"])
    started = system.clock()
    while system.clock() - started < timeout:
        if ready():
            system.run([rauc, "status", "mark-good"], capture_output=True, text=True, check=True)
            system.paths.pending_file.unlink(missing_ok=True)
            return record(system, "updated", f"now running {pending['version']} in slot {booted} "
                          f"(was {pending.get('from_version')}); ready {round(system.clock() - started)} s after "
                          "the check started", version=pending["version"], slot=booted)
        system.sleep(poll)
    system.run([rauc, "status", "mark-bad"], capture_output=True, text=True)
    status = record(system, "falling back", f"{pending['version']} in slot {booted} was not ready within "
                    f"{timeout:.0f} s; rebooting into {pending.get('from_version')} in slot {pending.get('from_slot')}",
                    version=pending["version"], slot=booted)
    system.reboot()
    return status


def service_ready(unit: str, health_url: str, run=subprocess.run, timeout: float = 10) -> bool:
    """systemd reports the unit active (Type=notify: READY=1 sent) and /healthz answers status ok."""
    state = run(["systemctl", "is-active", unit], capture_output=True, text=True).stdout.strip()
    if state != "active":
        return False
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # our own box, by loopback
    try:
        with urllib.request.urlopen(health_url, timeout=timeout, context=context) as response:
            return json.loads(response.read()).get("status") == "ok"
    except (OSError, ValueError, urllib.error.URLError):
        return False
