"""The ``pacs-appliance`` command line: the operator's way in (one module per command group, common.py shared).

Each command loads the config of one data directory (``--data``, default
``$PACS_DATA_DIR`` or ``./var``) and builds only what it needs. Expected
failures print one clear line and exit non-zero; they never print a traceback.
"""
from __future__ import annotations

import os

from pathlib import Path

import click

from .backup import backup as backup_group, keys
from .common import data_option, friendly_errors, load_config, open_appliance, resolve_data_dir
from .corrections import correct
from .dicom import conformance, forward, modality, worklist
from .imports import import_
from .index import index as index_group
from .integrity import verify
from .ohif import ohif as ohif_group
from .storage import storage as storage_group
from .system import firstboot, tls
from .update import update as update_group
from .users import user

__all__ = ["main", "load_config", "open_appliance"]  # the last two for scripts and tests that open a data dir


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pacs-appliance")
def main() -> None:
    """PACS Appliance: a self-contained picture archive for a small clinic."""


def print_init_result(result) -> None:
    click.echo(f"Initialised {result.data_dir}")
    click.echo("")
    click.echo(f"  Web login:     user '{result.admin_user}'" + (
        f", password '{result.admin_password}'" if result.password_generated else ", password from your file"))
    click.echo(f"  Recovery key:  {result.recovery_key}")
    click.echo("")
    click.echo("Write the recovery key down and keep it away from this box: with the offsite backup it is")
    click.echo("the only way to get the images back if the box is lost. It is not shown again")
    click.echo("(an admin can export it later with `pacs-appliance keys export-recovery`).")


@main.command()
@data_option
@click.option("--admin-password-file", type=click.File("r"), default=None,
              help="Read the first admin's password from this file (default: generate one and print it).")
@click.option("--admin-user", default="admin", show_default=True, help="User name of the first admin.")
@friendly_errors
def init(data_dir: Path | None, admin_password_file, admin_user: str) -> None:
    """Create a data directory: config, keys, index, archive, inbox and the first admin."""
    from ..datadir import initialize

    password = admin_password_file.read().strip("\r\n") if admin_password_file else None
    print_init_result(initialize(resolve_data_dir(data_dir), admin_password=password, admin_user=admin_user))


@main.command()
@data_option
@friendly_errors
def serve(data_dir: Path | None) -> None:
    """Run the appliance (DICOM node and web app) until SIGTERM or Ctrl-C.

    In a checkout with no data directory yet, one is created first and its
    admin password and recovery key are printed.
    """
    from .. import malloc
    from ..app import build, serve as run
    from ..datadir import initialize, is_initialized
    from ..datalock import hold

    malloc.tune()  # before any thread exists: a thread that allocated earlier keeps an arena of its own
    path = resolve_data_dir(data_dir)
    if not is_initialized(path) and (not path.exists() or not any(path.iterdir())):
        print_init_result(initialize(path))
    cfg = load_config(path)
    held = hold(cfg.data_dir, "serve")  # for the life of the process: no offline index rebuild meanwhile
    try:
        run(build(cfg))
    finally:
        os.close(held)


# Groups named like their module are imported under another name, so that appliance.cli.backup (ohif, storage,
# update) stays the module, for a test's monkeypatch or mock target.
for command in (verify, backup_group, keys, import_, modality, worklist, forward, conformance, user, firstboot, tls,
                storage_group, correct, ohif_group, update_group, index_group):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
