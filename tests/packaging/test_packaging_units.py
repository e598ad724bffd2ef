"""The systemd units, sysusers and tmpfiles files as shipped in the image."""
from __future__ import annotations

import subprocess
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = SYSTEMD / "pacs-appliance.service"
PROVISION = SYSTEMD / "pacs-appliance-provision.service"


def directives(unit: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit, values of repeated keys in order (section names dropped)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_units_verify_apart_from_the_missing_venv():
    # The venv only exists inside the image; everything else must be clean.
    update_units = sorted(str(u) for u in SYSTEMD.glob("pacs-appliance-update*") if "@" not in u.name)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(SERVICE), str(PROVISION), *update_units],
                         capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "is not executable" not in line]
    assert not problems, problems


def test_security_exposure_is_ok_or_better():
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(SERVICE)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    verdict = [line for line in out.stdout.splitlines() if "Overall exposure level" in line][0]
    assert any(level in verdict for level in (" OK", "SAFE", "PERFECT")), verdict


def test_service_is_a_hardened_notify_service():
    d = directives(SERVICE)
    expected = {
        "Type": ["notify"], "Restart": ["on-failure"], "User": ["pacs"], "Group": ["pacs"],
        "NoNewPrivileges": ["yes"], "PrivateTmp": ["yes"], "ProtectSystem": ["strict"],
        "CapabilityBoundingSet": ["CAP_NET_BIND_SERVICE"], "AmbientCapabilities": ["CAP_NET_BIND_SERVICE"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "StateDirectory": ["pacs-appliance/data"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, (key, d.get(key))
    assert d["WatchdogSec"] and d["SystemCallFilter"][0] == "@system-service"
    assert "ReadWritePaths" not in d  # the data directory (StateDirectory) is the only writable place
    assert "--data /var/lib/pacs-appliance/data" in d["ExecStart"][0]
    assert "pacs-appliance-provision.service" in d["Requires"][0]


def test_provisioning_never_sends_secrets_to_the_journal_by_design():
    # The unit's stdout is the journal: the code writes the login to console devices only
    # (checked in test_firstboot.py); the unit must run the same CLI command as documented.
    d = directives(PROVISION)
    assert d["Type"] == ["oneshot"] and d["ExecStart"][0].split()[1] == "firstboot"
    assert "pacs-appliance.service" in d["Before"][0]


def test_sysusers_creates_the_service_user_and_tmpfiles_the_root_only_directory():
    user_line = [line for line in (SYSTEMD / "pacs-appliance.sysusers").read_text().splitlines()
                 if line.startswith("u ")]
    assert user_line and user_line[0].split()[1] == directives(SERVICE)["User"][0]
    tmpfiles = (SYSTEMD / "pacs-appliance.tmpfiles").read_text()
    assert "/var/lib/pacs-appliance/provisioning  0700 root root" in tmpfiles
