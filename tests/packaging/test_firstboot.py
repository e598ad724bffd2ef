"""First-boot provisioning: the vendor whitelist, OS settings, secrets made once and never logged."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config as config_mod, firstboot as fb
from appliance.datadir import is_initialized

CLI = [sys.executable, "-m", "appliance"]


def vendor(tmp_path: Path, text: str) -> fb.VendorSettings:
    path = tmp_path / "pacs-vendor.toml"
    path.write_text(text)
    return fb.read_vendor(path)


def test_missing_vendor_file_means_defaults(tmp_path):
    settings = fb.read_vendor(tmp_path / "nope.toml")
    assert settings == fb.VendorSettings() and not settings.present


def test_good_vendor_file(tmp_path):
    s = vendor(tmp_path, '\ufeffhostname = "pacs-01"\ntimezone = "Europe/Berlin"\nae_title = "CLINIC PACS"\n'
                         'dicom_port = 104\nsite_name = "Example Clinic"\nbackup_target = "sftp://pacs@nas.lan/backup"\n'
                         '[network]\naddress = "192.168.1.20/24"\ngateway = "192.168.1.1"\ndns = ["192.168.1.1"]\n')
    assert (s.hostname, s.timezone, s.ae_title, s.dicom_port, s.site_name) == \
        ("pacs-01", "Europe/Berlin", "CLINIC PACS", 104, "Example Clinic")
    assert s.network == fb.Network("192.168.1.20/24", "192.168.1.1", ("192.168.1.1",))
    assert s.backup_target == "sftp://pacs@nas.lan/backup"


@pytest.mark.parametrize("text, message", [
    ('hostnme = "x"', "hostnme: unknown key; allowed keys are: hostname, timezone"),
    ('hostname = "-bad"', "hostname: '-bad' is not valid: box name"),
    ('hostname = 5', "hostname: must be text in quotes"),
    ('timezone = "Mars/Olympus"', "timezone: 'Mars/Olympus' is not a known time zone"),
    ('timezone = "../../etc/passwd"', "timezone: '../../etc/passwd' is not valid"),
    ('ae_title = "MUCH_TOO_LONG_AE_TITLE"', "ae_title: 'MUCH_TOO_LONG_AE_TITLE' is not valid: the archive's AE title"),
    ('ae_title = "A\\\\B"', "ae_title: 'A\\\\B' is not valid"),
    ('dicom_port = "104"', "dicom_port: '104' is not valid"),
    ('dicom_port = 70000', "dicom_port: 70000 is not valid"),
    ('dicom_port = true', "dicom_port: True is not valid"),
    ('network = "dhcp"', "network: must be a [network] table"),
    ('[network]\ngateway = "10.0.0.1"', "network.address: missing"),
    ('[network]\naddress = "10.0.0.5"', "network.address: '10.0.0.5' is not valid"),
    ('[network]\naddress = "10.0.0.5/24"\ngateway = "fe80::1"', "network.gateway: 'fe80::1' is not valid"),
    ('[network]\naddress = "10.0.0.5/24"\ndns = "10.0.0.1"', "network.dns: must be a list"),
    ('[network]\naddress = "10.0.0.5/24"\nmtu = 1400', "network.mtu: unknown key"),
    ('hostname = "unterminated', "not valid TOML"),
    ('backup_target = "sftp://user:secret@nas/x"', "backup_target: 'sftp://user:secret@nas/x' is not valid"),
    ('backup_target = "ftp://nas/x"', "backup_target: 'ftp://nas/x' is not valid"),
    ('backup_target = "sftp://nas/x"', "without any password"),
    ('backup_target = "sftp://nas/x"', "must look like sftp://user@host:port/path"),  # the target's own words
    ('backup_target = "file://nas/x"', "names host 'nas'"),
    ('backup_target = "/mnt/nas"', "a plain path; write file:///path"),
])
def test_bad_vendor_values_name_the_key_and_what_is_allowed(tmp_path, text, message):
    with pytest.raises(fb.VendorConfigError) as err:
        vendor(tmp_path, text + "\n")
    assert str(err.value).startswith("pacs-vendor.toml: ")
    assert message in str(err.value)


def test_appliance_toml_sets_image_and_vendor_values_and_loads(tmp_path):
    (tmp_path / "d").mkdir()
    text = fb.appliance_toml(fb.VendorSettings(ae_title="CLINIC", dicom_port=11113, site_name="Clinic",
                                               backup_target="s3://bucket/box1"))
    (tmp_path / "d" / config_mod.CONFIG_FILE_NAME).write_text(text)
    cfg = config_mod.load(tmp_path / "d", env={})
    assert (cfg.dicom.ae_title, cfg.dicom.port, cfg.http.port, cfg.http.tls, cfg.http.tls_port) == \
        ("CLINIC", 11113, 80, True, 443)
    assert cfg.site.clinic_name == "Clinic" and cfg.backup.target == "s3://bucket/box1"
    assert (cfg.dicom.tls_port, cfg.dicom.tls_cert) == (2762, "")  # DICOM TLS on, with the box's certificate


def test_vendor_file_can_turn_dicom_tls_off(tmp_path):
    s = vendor(tmp_path, "dicom_tls = false\n")
    assert s.dicom_tls is False and vendor(tmp_path, "dicom_tls = true\n").dicom_tls is True
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / config_mod.CONFIG_FILE_NAME).write_text(fb.appliance_toml(s))
    assert config_mod.load(tmp_path / "d", env={}).dicom.tls_port == 0
    with pytest.raises(fb.VendorConfigError, match="dicom_tls: 'no' is not valid: true"):
        vendor(tmp_path, 'dicom_tls = "no"\n')


def test_apply_system_writes_hostname_timezone_network_idempotently(tmp_path):
    root = tmp_path / "sysroot"
    s = fb.VendorSettings(hostname="pacs-01", timezone="Europe/Berlin",
                          network=fb.Network("10.0.0.5/24", "10.0.0.1", ("10.0.0.1",)))
    fb.apply_system(s, root)
    fb.apply_system(s, root)
    assert (root / "etc/hostname").read_text() == "pacs-01\n"
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    network = (root / fb.STATIC_NETWORK_FILE).read_text()
    assert "Address=10.0.0.5/24" in network and "Gateway=10.0.0.1" in network and "DNS=10.0.0.1" in network
    fb.apply_system(fb.VendorSettings(), root)  # [network] removed from the vendor file: back to DHCP
    assert not (root / fb.STATIC_NETWORK_FILE).exists()


def run_firstboot(tmp_path: Path, vendor_text: str | None = None) -> subprocess.CompletedProcess:
    vendor_file = tmp_path / "pacs-vendor.toml"
    if vendor_text is not None:
        vendor_file.write_text(vendor_text)
    sysroot = tmp_path / "sysroot"
    (sysroot / "usr/share").mkdir(parents=True, exist_ok=True)
    if not (sysroot / "usr/share/zoneinfo").exists():
        (sysroot / "usr/share/zoneinfo").symlink_to("/usr/share/zoneinfo")
    return subprocess.run(CLI + ["firstboot", "--root-dir", str(tmp_path / "part"), "--vendor-file", str(vendor_file),
                                 "--console", str(tmp_path / "console"), "--service-user", "",
                                 "--sysroot", str(sysroot)], capture_output=True, text=True)


def test_first_boot_makes_secrets_once_shows_them_on_the_console_only(tmp_path):
    first = run_firstboot(tmp_path, 'hostname = "pacs-test"\nae_title = "CLINIC"\n')
    assert first.returncode == 0, first.stderr
    layout = fb.Layout(tmp_path / "part")
    assert is_initialized(layout.data_dir) and not layout.partial_dir.exists()
    console = (tmp_path / "console").read_text()
    password = console.split("password '")[1].split("'")[0]
    recovery = console.split("Recovery key:")[1].split()[0]
    # Shown on the console and kept root-only; never on stdout/stderr (the journal).
    assert password not in first.stdout + first.stderr and recovery not in first.stdout + first.stderr
    assert layout.credentials_file.stat().st_mode & 0o777 == 0o600
    assert layout.provisioning_dir.stat().st_mode & 0o777 == 0o700
    assert password in layout.credentials_file.read_text()
    cfg = config_mod.load(layout.data_dir, env={})
    assert cfg.dicom.ae_title == "CLINIC" and cfg.http.tls
    keys = sorted((p.name, p.read_bytes()) for p in (layout.data_dir / "keys").iterdir())
    cert = (layout.data_dir / "tls" / "cert.pem").read_bytes()

    again = run_firstboot(tmp_path)  # the vendor file may go away; secrets stay
    assert again.returncode == 0, again.stderr
    assert "already provisioned" in again.stdout
    assert (tmp_path / "console").read_text() == console  # no second banner
    assert sorted((p.name, p.read_bytes()) for p in (layout.data_dir / "keys").iterdir()) == keys
    assert (layout.data_dir / "tls" / "cert.pem").read_bytes() == cert

    from appliance.archive import KeyStore
    from appliance.index import Index
    from appliance.records import accounts

    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        assert accounts.authenticate(index.accounts, "admin", password) is not None
    finally:
        index.close()


def test_interrupted_first_boot_starts_again(tmp_path):
    layout = fb.Layout(tmp_path / "part")
    (layout.partial_dir / "keys").mkdir(parents=True)  # a power cut mid-way
    (layout.partial_dir / "keys" / "junk").write_text("x")
    result = run_firstboot(tmp_path)
    assert result.returncode == 0, result.stderr
    assert is_initialized(layout.data_dir) and not layout.partial_dir.exists()


def test_bad_vendor_value_stops_provisioning_with_a_clear_message(tmp_path):
    result = run_firstboot(tmp_path, 'dicom_port = "one hundred and four"\n')
    assert result.returncode == 2
    assert "error: pacs-vendor.toml: dicom_port: 'one hundred and four' is not valid" in result.stderr
    assert "fix pacs-vendor.toml on the PACSCFG partition" in result.stderr
    assert "dicom_port: 'one hundred and four' is not valid" in (tmp_path / "console").read_text()  # on screen
    assert not (tmp_path / "part" / "data").exists()
