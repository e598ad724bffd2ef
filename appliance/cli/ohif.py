"""``pacs-appliance ohif``: install OHIF's release build so the box serves it at /ohif."""
from __future__ import annotations

from pathlib import Path

import click

from .. import config as config_mod
from .common import data_option, friendly_errors, resolve_data_dir


@click.group()
def ohif() -> None:
    """The OHIF viewer served at /ohif (signed in by the box's own session)."""


@ohif.command("install")
@click.argument("tarball", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_option
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Install here instead of [ohif] dist_dir (the OS image build puts it under /usr/share).")
@friendly_errors
def install(tarball: Path, data_dir: Path | None, dest: Path | None) -> None:
    """Install TARBALL (from `npm pack @ohif/app@VERSION`); nothing is fetched. Restart not needed."""
    from ..ohif import install as do_install

    target = dest if dest is not None else config_mod.load(resolve_data_dir(data_dir)).ohif_dir
    version = do_install(tarball, target)
    click.echo(f"OHIF {version} installed in {target}; it is served at /ohif")


@ohif.command("status")
@data_option
def status(data_dir: Path | None) -> None:
    """Say whether OHIF is installed, and which version."""
    from ..ohif import installed_version

    target = config_mod.load(resolve_data_dir(data_dir)).ohif_dir
    version = installed_version(target)
    click.echo(f"OHIF {version} in {target}" if version else f"OHIF is not installed in {target}")
