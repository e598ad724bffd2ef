"""Appliance-image commands: ``pacs-appliance firstboot`` and ``pacs-appliance tls ...``."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from .common import data_option, friendly_errors, resolve_data_dir


@click.command()
@click.option("--root-dir", type=click.Path(path_type=Path), default=Path("/var/lib/pacs-appliance"),
              show_default=True, help="The data partition's mount point (holds data/ and provisioning/).")
@click.option("--vendor-file", type=click.Path(path_type=Path), default=Path("/boot/vendor/pacs-vendor.toml"),
              show_default=True, help="The vendor settings on the PACSCFG partition (optional).")
@click.option("--console", "consoles", multiple=True, type=click.Path(path_type=Path),
              help="Where to show the first login (repeatable; default: the kernel's active consoles).")
@click.option("--service-user", default="pacs", show_default=True,
              help="Owner of the data directory; empty to leave ownership alone.")
@click.option("--sysroot", type=click.Path(path_type=Path), default=Path("/"), show_default=True,
              help="Root of the OS whose hostname, time zone and network are set.")
@friendly_errors
def firstboot(root_dir: Path, vendor_file: Path, consoles: tuple[Path, ...], service_user: str,
              sysroot: Path) -> None:
    """Provision this box (run by pacs-appliance-provision.service on every boot; idempotent).

    First boot: new keys, recovery key, admin password and TLS certificate, shown
    once on the console (never on stdout or in the journal). Every boot: apply the
    vendor's hostname, time zone and network from pacs-vendor.toml.
    """
    from .. import firstboot as fb

    try:
        vendor = fb.read_vendor(vendor_file, zoneinfo_dir=sysroot / "usr/share/zoneinfo")
    except fb.VendorConfigError as exc:
        message = (f"error: {exc}\nProvisioning stopped: fix {vendor_file.name} on the PACSCFG partition (see "
                   f"pacs-vendor.toml.example next to it) and restart the box.")
        click.echo(message, err=True)
        for console in list(consoles) or fb.console_devices():  # the screen, not only the journal
            fb.show(console, f"\n{message}\n")
        sys.exit(exc.exit_code)
    if not vendor.present:
        click.echo(f"no {vendor_file}: using the defaults (DHCP, hostname from the image)")
    outcome = fb.provision(fb.Layout(root_dir), vendor, list(consoles) or fb.console_devices(),
                           service_user=service_user or None, sysroot=sysroot)
    for message in outcome.messages:
        click.echo(message)


@click.group()
def tls() -> None:
    """The web UI's TLS certificate (in <data dir>/tls/)."""


@tls.command()
@data_option
@click.option("--hostname", default=None, help="Name in the certificate (default: this box's hostname).")
@friendly_errors
def renew(data_dir: Path | None, hostname: str | None) -> None:
    """Replace the certificate with a new self-signed one (new key)."""
    from .. import tls as tls_mod

    path = resolve_data_dir(data_dir)
    files = tls_mod.install(path, *tls_mod.make_self_signed(hostname or socket.gethostname()))
    _report(files, "new self-signed certificate")


@tls.command("install")
@data_option
@click.option("--cert", "cert_file", type=click.File("rb"), required=True,
              help="PEM certificate (the server certificate first, then any intermediates).")
@click.option("--key", "key_file", type=click.File("rb"), required=True, help="PEM private key, unencrypted.")
@friendly_errors
def install_cmd(data_dir: Path | None, cert_file, key_file) -> None:
    """Install a certificate from the clinic's own CA (checked against its key first)."""
    from .. import tls as tls_mod

    files = tls_mod.install(resolve_data_dir(data_dir), cert_file.read(), key_file.read())
    _report(files, "installed certificate")


@tls.command()
@data_option
@friendly_errors
def show(data_dir: Path | None) -> None:
    """Print the certificate's names, validity and fingerprint."""
    from cryptography import x509

    from .. import tls as tls_mod
    from ..errors import ConfigError

    files = tls_mod.files(resolve_data_dir(data_dir))
    if not files.exist():
        raise ConfigError(f"no certificate in {files.cert.parent}: make one with `pacs-appliance tls renew`")
    pem = files.cert.read_bytes()
    cert = x509.load_pem_x509_certificates(pem)[0]
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = ", ".join(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        san = "-"
    click.echo(f"subject:     {cert.subject.rfc4514_string()}")
    click.echo(f"names:       {san}")
    click.echo(f"valid until: {cert.not_valid_after_utc:%Y-%m-%d}")
    click.echo(f"SHA-256:     {tls_mod.fingerprint(pem)}")


def _report(files, what: str) -> None:
    from .. import tls as tls_mod

    click.echo(f"{what}: {files.cert}")
    click.echo(f"SHA-256: {tls_mod.fingerprint(files.cert.read_bytes())}")
    click.echo("Restart the service to use it: systemctl restart pacs-appliance")
