"""``pacs-appliance update``: signed A/B updates of the appliance image (run as root on the box)."""
from __future__ import annotations

import datetime
from pathlib import Path

import click

from .common import friendly_errors

root_option = click.option("--root-dir", type=click.Path(path_type=Path), default=Path("/var/lib/pacs-appliance"),
                           show_default=True, help="Mount point of the data partition.")
keyring_option = click.option("--keyring", type=click.Path(path_type=Path), default=None,
                              help="Vendor certificate(s) to trust (default: /etc/rauc/keyring.pem).")


def _system(root_dir: Path, keyring: Path | None = None):
    from ..update.bundle import KEYRING
    from ..update.service import System, UpdatePaths

    return System(paths=UpdatePaths(root_dir), keyring=keyring or KEYRING)


def _config(root_dir: Path):
    from .. import config as config_mod

    return config_mod.load(root_dir / "data")


@click.group()
def update() -> None:
    """Signed updates: check, install (from a file, the admin upload, USB or the vendor URL), confirm."""


@update.command("check")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@keyring_option
@friendly_errors
def check_cmd(bundle: Path, keyring: Path | None) -> None:
    """Check a bundle's signature and content without installing it."""
    from ..update.bundle import KEYRING, verify

    info = verify(bundle, keyring=keyring or KEYRING)
    click.echo(f"{bundle.name}: version {info.version}, signed by {info.signer or 'the vendor'}: OK")


@update.command("install")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@root_option
@click.option("--no-reboot", is_flag=True, help="Install, but start it only at the next reboot.")
@friendly_errors
def install_cmd(bundle: Path, root_dir: Path, no_reboot: bool) -> None:
    """Check BUNDLE and write it to the other root slot, then reboot into it."""
    from ..update.service import install

    info = install(_system(root_dir), bundle, reboot=not no_reboot)
    click.echo(f"installed {info.version}" + ("; rebooting" if not no_reboot else "; starts at the next reboot"))


@update.command("apply-incoming")
@root_option
@friendly_errors
def apply_incoming(root_dir: Path) -> None:
    """Install the bundle uploaded through the admin page (pacs-appliance-update.path runs this)."""
    from ..update.service import install_incoming

    info = install_incoming(_system(root_dir))
    click.echo(f"installed {info.version}" if info else "no uploaded bundle")


@update.command("usb")
@click.argument("device")
@root_option
@friendly_errors
def usb(device: str, root_dir: Path) -> None:
    """Install the bundle from a USB stick labelled PACSUPDATE (the udev rule runs this)."""
    from ..update.service import install_from_usb

    info = install_from_usb(_system(root_dir), device)
    click.echo(f"installed {info.version}" if info else "nothing installed: see `pacs-appliance update status`")


@update.command("pull")
@root_option
@click.option("--now", is_flag=True, help="Ignore [update] window.")
@friendly_errors
def pull_cmd(root_dir: Path, now: bool) -> None:
    """Fetch the bundle at [update] url and install it if it is a new version (the timer runs this)."""
    from ..update.service import in_window, pull

    cfg = _config(root_dir).update
    if not cfg.url:
        click.echo("no [update] url set: nothing to pull")
        return
    if not now and not in_window(cfg.window, datetime.datetime.now()):
        click.echo(f"outside [update] window {cfg.window}: not pulling now")
        return
    info = pull(_system(root_dir), cfg.url)
    click.echo(f"installed {info.version}" if info else "up to date")


@update.command("confirm")
@root_option
@click.option("--timeout", type=float, default=None, help="Seconds to wait (default: [update] confirm_timeout_s).")
@friendly_errors
def confirm_cmd(root_dir: Path, timeout: float | None) -> None:
    """After boot: keep a newly installed root once the service is ready, else fall back (a unit runs this)."""
    from ..update.service import confirm, service_ready

    cfg = _config(root_dir)
    port, scheme = (cfg.http.tls_port, "https") if cfg.http.tls else (cfg.http.port, "http")
    url = f"{scheme}://127.0.0.1:{port}/healthz"
    status = confirm(_system(root_dir), lambda: service_ready("pacs-appliance.service", url),
                     timeout if timeout is not None else cfg.update.confirm_timeout_s)
    if status["state"] != "nothing pending":  # the unit's output also goes to the console
        click.echo(status.get("message", status["state"]))


@update.command("status")
@root_option
@friendly_errors
def status_cmd(root_dir: Path) -> None:
    """The running version and slot, and what the last update did."""
    from ..update.service import read_json

    system = _system(root_dir)
    try:
        slot = system.booted_slot()
    except Exception:  # noqa: BLE001 - not an A/B box (e.g. a checkout)
        slot = "-"
    click.echo(f"running {system.running_version()} from slot {slot}")
    last = read_json(system.paths.status_file)
    if last:
        click.echo(f"last update: {last['state']} at {last['at']}: {last['message']}")
    pending = read_json(system.paths.pending_file)
    if pending:
        click.echo(f"pending: {pending['version']} in slot {pending['slot']} (confirmed once the service is ready)")
