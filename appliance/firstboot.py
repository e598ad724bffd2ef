"""Provisioning of an appliance box (``pacs-appliance firstboot``), run as root on every boot.

First boot, once: make the box's data directory with ``datadir.initialize`` (the
same code as ``pacs-appliance init``: archive keys, recovery key, index, first
admin with a generated password) and its TLS certificate, hand it to the
service's user, keep the login in a root-only file and show it on the console.
It is built in ``data.partial`` and renamed into place last, so a power cut
mid-way leaves nothing half made: the next boot starts again. Secrets are never
printed to stdout/stderr (the journal), only to the console devices.

Every boot: apply the vendor settings that live in the OS (hostname, time zone,
static network) from ``pacs-vendor.toml`` on the PACSCFG partition, so they
survive an update that replaces the root partition. The settings that live in
the appliance (AE title, DICOM port, DICOM TLS, site name, backup target) are written to the data
directory's appliance.toml on first boot only; afterwards an admin owns them.

``pacs-vendor.toml`` is read through a whitelist: unknown keys and bad values stop
provisioning with a message naming the key and what is allowed.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import config as config_mod, tls
from .archive.fsutil import fsync_dir
from .backup.targets import check_url as check_target_url
from .datadir import initialize, is_initialized
from .errors import ConfigError

VENDOR_FILE_NAME = "pacs-vendor.toml"
CREDENTIALS_NAME = "first-login.txt"
STATIC_NETWORK_FILE = "etc/systemd/network/10-pacs-static.network"

# What the appliance image changes from the checkout defaults: the standard
# ports, HTTPS and DICOM TLS (2762, the standard DICOM TLS port) with the box's
# own certificate. The vendor file can turn DICOM TLS off (dicom_tls = false).
DICOM_TLS_PORT = 2762
IMAGE_SETTINGS: dict[tuple[str, str], Any] = {
    ("dicom", "port"): 104,
    ("dicom", "tls_port"): DICOM_TLS_PORT,
    ("http", "port"): 80,
    ("http", "tls"): True,
    ("http", "tls_port"): 443,
    ("http", "secure_cookies"): True,
}


class VendorConfigError(ConfigError):
    pass


@dataclass(frozen=True)
class Network:
    address: str  # CIDR, e.g. 192.168.1.20/24
    gateway: str = ""
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class VendorSettings:
    hostname: str = ""
    timezone: str = ""
    ae_title: str = ""
    dicom_port: int | None = None
    dicom_tls: bool = True
    site_name: str = ""
    network: Network | None = None
    backup_target: str = ""
    present: bool = False  # whether the file was there at all


@dataclass(frozen=True)
class Layout:
    """Where provisioning keeps things on the data partition (mounted at ``root``)."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def partial_dir(self) -> Path:
        return self.root / "data.partial"

    @property
    def provisioning_dir(self) -> Path:
        return self.root / "provisioning"

    @property
    def credentials_file(self) -> Path:
        return self.provisioning_dir / CREDENTIALS_NAME


@dataclass
class Outcome:
    provisioned_now: bool
    data_dir: Path
    messages: list[str] = field(default_factory=list)  # safe for the journal: no secrets


# ---------------------------------------------------------------- vendor file

_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_TZ = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
KEYS = {
    "hostname": "box name on the network: letters, digits and '-', at most 63 characters",
    "timezone": "a time zone from /usr/share/zoneinfo, e.g. \"Europe/Berlin\"",
    "ae_title": "the archive's AE title: 1-16 characters, no backslash or control characters",
    "dicom_port": "the DICOM port, a number from 1 to 65535 (104 is the standard port)",
    "dicom_tls": f"true (default) or false: DICOM over TLS on port {DICOM_TLS_PORT} with the box's certificate",
    "site_name": "the clinic's name, at most 64 characters",
    "network": "a [network] table with address (CIDR), gateway and dns; leave it out for DHCP",
    "backup_target": "where the nightly encrypted copy goes: file:///path, sftp://user@host:22/path or "
                     "s3://bucket/prefix, without any password (credentials are set on the box later)",
}
NETWORK_KEYS = {
    "address": "the static address with prefix length, e.g. \"192.168.1.20/24\"",
    "gateway": "the default gateway, e.g. \"192.168.1.1\"",
    "dns": "a list of DNS servers, e.g. [\"192.168.1.1\"]",
}


def read_vendor(path: Path, zoneinfo_dir: Path = Path("/usr/share/zoneinfo")) -> VendorSettings:
    """Read and check ``pacs-vendor.toml``; a missing file means "all defaults"."""
    path = Path(path)
    if not path.is_file():
        return VendorSettings()
    name = path.name

    def bad(key: str, why: str) -> VendorConfigError:
        return VendorConfigError(f"{name}: {key}: {why}")

    try:
        # utf-8-sig: Windows Notepad may save with a byte-order mark.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise VendorConfigError(f"{name}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise VendorConfigError(f"{name}: not valid TOML ({exc}); see pacs-vendor.toml.example") from None

    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key; allowed keys are: {', '.join(KEYS)}")

    def text(key: str, pattern=None, max_len: int = 64) -> str:
        if key not in data:
            return ""
        value = data[key]
        if not isinstance(value, str):
            raise bad(key, f"must be text in quotes ({KEYS[key]}), got {value!r}")
        if not value or len(value) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in value) \
                or (pattern is not None and not pattern.match(value)):
            raise bad(key, f"{value!r} is not valid: {KEYS[key]}")
        return value

    hostname = text("hostname", _HOSTNAME, 63)
    timezone = text("timezone", _TZ, 64)
    if timezone and not (Path(zoneinfo_dir) / timezone).is_file():
        raise bad("timezone", f"{timezone!r} is not a known time zone: {KEYS['timezone']}")
    ae_title = text("ae_title", None, 16)
    if ae_title and ("\\" in ae_title or ae_title.strip() != ae_title or not ae_title.isascii()):
        raise bad("ae_title", f"{ae_title!r} is not valid: {KEYS['ae_title']}, no leading or trailing spaces")
    site_name = text("site_name", None, 64)
    dicom_port = data.get("dicom_port")
    if dicom_port is not None and (isinstance(dicom_port, bool) or not isinstance(dicom_port, int)
                                   or not 1 <= dicom_port <= 65535):
        raise bad("dicom_port", f"{dicom_port!r} is not valid: {KEYS['dicom_port']} (a number, no quotes)")
    dicom_tls = data.get("dicom_tls", True)
    if not isinstance(dicom_tls, bool):
        raise bad("dicom_tls", f"{dicom_tls!r} is not valid: {KEYS['dicom_tls']} (no quotes)")
    network = _read_network(data["network"], bad) if "network" in data else None
    backup_target = text("backup_target", None, 512)
    if backup_target:
        try:
            if not urlsplit(backup_target).scheme:
                raise ConfigError("a plain path; write file:///path")
            check_target_url(backup_target)
        except ConfigError as exc:
            raise bad("backup_target", f"{backup_target!r} is not valid ({exc}): {KEYS['backup_target']}") from None
    return VendorSettings(hostname, timezone, ae_title, dicom_port, dicom_tls, site_name, network, backup_target,
                          present=True)


def _read_network(table: Any, bad) -> Network:
    if not isinstance(table, dict):
        raise bad("network", f"must be a [network] table: {KEYS['network']}")
    unknown = sorted(set(table) - set(NETWORK_KEYS))
    if unknown:
        raise bad(f"network.{unknown[0]}", f"unknown key; allowed keys are: {', '.join(NETWORK_KEYS)}")
    if "address" not in table:
        raise bad("network.address", f"missing: {NETWORK_KEYS['address']} (or leave out [network] for DHCP)")
    try:
        if not isinstance(table["address"], str) or "/" not in table["address"]:
            raise ValueError
        address = ipaddress.ip_interface(table["address"])
    except ValueError:
        raise bad("network.address", f"{table['address']!r} is not valid: {NETWORK_KEYS['address']}") from None
    gateway = table.get("gateway", "")
    if gateway:
        try:
            if not isinstance(gateway, str) or ipaddress.ip_address(gateway).version != address.version:
                raise ValueError
        except ValueError:
            raise bad("network.gateway", f"{gateway!r} is not valid: {NETWORK_KEYS['gateway']}") from None
    dns = table.get("dns", [])
    if not isinstance(dns, list):
        raise bad("network.dns", f"must be a list in [ ]: {NETWORK_KEYS['dns']}")
    for server in dns:
        try:
            ipaddress.ip_address(server if isinstance(server, str) else "")
        except ValueError:
            raise bad("network.dns", f"{server!r} is not an IP address: {NETWORK_KEYS['dns']}") from None
    return Network(str(address), gateway, tuple(dns))


# ------------------------------------------------------------- appliance.toml

def appliance_toml(vendor: VendorSettings) -> str:
    """The documented defaults with the image's and the vendor's values set (uncommented)."""
    values = dict(IMAGE_SETTINGS)
    if vendor.ae_title:
        values[("dicom", "ae_title")] = vendor.ae_title
    if vendor.dicom_port is not None:
        values[("dicom", "port")] = vendor.dicom_port
    if not vendor.dicom_tls:
        values[("dicom", "tls_port")] = 0
    if vendor.site_name:
        values[("site", "clinic_name")] = vendor.site_name
    if vendor.backup_target:
        values[("backup", "target")] = vendor.backup_target
    known = {(s.section, s.key) for s in config_mod.SETTINGS}
    values = {k: v for k, v in values.items() if k in known}  # settings this version has
    lines, section = [], None
    for line in config_mod.render_documented_defaults().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        match = re.match(r"^# (\w+) = ", line)
        if match and (section, match.group(1)) in values:
            line = f"{match.group(1)} = {config_mod._toml_value(values[(section, match.group(1))])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------ OS settings

def apply_system(vendor: VendorSettings, sysroot: Path = Path("/")) -> list[str]:
    """Write hostname, time zone and network into the OS at ``sysroot``; idempotent."""
    done = []
    live = Path(sysroot) == Path("/")
    if vendor.hostname:
        _write_if_changed(sysroot / "etc/hostname", vendor.hostname + "\n")
        if live and socket.gethostname() != vendor.hostname:
            socket.sethostname(vendor.hostname)
        done.append(f"hostname {vendor.hostname}")
    if vendor.timezone:
        localtime = sysroot / "etc/localtime"
        target = f"/usr/share/zoneinfo/{vendor.timezone}"
        if not (localtime.is_symlink() and os.readlink(localtime) == target):
            tmp = localtime.with_name("localtime.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, localtime)
        _write_if_changed(sysroot / "etc/timezone", vendor.timezone + "\n")
        done.append(f"time zone {vendor.timezone}")
    static = sysroot / STATIC_NETWORK_FILE
    if vendor.network:
        n = vendor.network
        body = ["# Written by pacs-appliance firstboot from pacs-vendor.toml [network]; edit that file instead.",
                "[Match]", "Name=en* eth*", "", "[Network]", f"Address={n.address}"]
        body += [f"Gateway={n.gateway}"] * bool(n.gateway) + [f"DNS={d}" for d in n.dns]
        _write_if_changed(static, "\n".join(body) + "\n")
        done.append(f"static network {n.address}")
    elif static.exists():
        static.unlink()
        done.append("network back to DHCP")
    return done


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ------------------------------------------------------------ provisioning

def provision(layout: Layout, vendor: VendorSettings, consoles: list[Path], service_user: str | None = "pacs",
              sysroot: Path = Path("/")) -> Outcome:
    """Apply the vendor's OS settings; on first boot make the data directory and show the login."""
    outcome = Outcome(False, layout.data_dir)
    outcome.messages += [f"applied {d}" for d in apply_system(vendor, sysroot)]
    hostname = vendor.hostname or socket.gethostname()
    if is_initialized(layout.data_dir):
        files, made = tls.ensure(layout.data_dir, hostname)  # an admin may have deleted a broken certificate
        outcome.messages.append("already provisioned: keys, admin and certificate kept"
                                + ("; made a new TLS certificate" if made else ""))
        return outcome

    layout.provisioning_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.rmtree(layout.partial_dir, ignore_errors=True)  # left by a power cut during a first boot
    result = initialize(layout.partial_dir, config_text=appliance_toml(vendor))
    files, _ = tls.ensure(layout.partial_dir, hostname)
    fingerprint = tls.fingerprint(files.cert.read_bytes())
    banner = login_banner(hostname, result.admin_user, result.admin_password, result.recovery_key, fingerprint,
                          layout.credentials_file)
    _write_private(layout.credentials_file, banner)
    if service_user:
        _chown_tree(layout.partial_dir, service_user)
    _fsync_tree(layout.partial_dir)
    os.replace(layout.partial_dir, layout.data_dir)
    fsync_dir(layout.root)
    for console in consoles:
        show(console, banner)
    outcome.provisioned_now = True
    outcome.messages.append(f"provisioned {layout.data_dir}: new keys, admin account and TLS certificate "
                            f"(SHA-256 {fingerprint}); login shown on the console, copy in {layout.credentials_file}")
    return outcome


def login_banner(hostname: str, user: str, password: str, recovery_key: str, fingerprint: str,
                 copy_path: Path) -> str:
    rule = "=" * 78
    return "\n".join([
        "", rule, "  PACS Appliance: first start of this box", rule,
        f"  Web UI:        https://{hostname}/   (or https://<this box's IP address>/)",
        f"  Certificate:   SHA-256 {fingerprint}",
        "                 (your browser warns once; check it shows this fingerprint)",
        f"  Admin login:   user '{user}'   password '{password}'",
        f"  Recovery key:  {recovery_key}",
        "",
        "  Write the recovery key down and keep it away from this box: with the offsite",
        "  backup it is the only way to get the images back if the box is lost.",
        "  This is shown once. A copy readable only by root is in",
        f"  {copy_path}; delete it once you have written it down.",
        rule, "",
    ])


def console_devices(active: Path = Path("/sys/class/tty/console/active")) -> list[Path]:
    """The kernel's active consoles (e.g. the screen and a serial port) as device paths."""
    try:
        names = active.read_text().split()
    except OSError:
        return [Path("/dev/console")]
    return [Path("/dev") / name for name in names] or [Path("/dev/console")]


def show(device: Path, text: str) -> None:
    """Write to a console device (never to the journal); a missing console is not an error."""
    is_device = str(device).startswith("/dev/")
    try:  # a plain file (tests) is created; a missing device is never created as a file
        fd = os.open(device, os.O_WRONLY | os.O_NOCTTY | os.O_APPEND | (0 if is_device else os.O_CREAT), 0o600)
    except OSError:
        return
    try:
        os.write(fd, (text.replace("\n", "\r\n") if is_device else text).encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _chown_tree(top: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for path in [top, *top.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _fsync_tree(top: Path) -> None:
    for path in [*top.rglob("*"), top]:
        if path.is_dir():
            fsync_dir(path)
        elif path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

