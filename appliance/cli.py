"""The ``pacs-appliance`` command line.

Each command loads the config of one data directory (``--data``, default
``$PACS_DATA_DIR`` or ``./var``) and builds only what it needs. Expected
failures print one clear line and exit non-zero; they never print a traceback.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path

import click

from . import config as config_mod
from . import logsetup
from .errors import ApplianceError

log = logging.getLogger(__name__)

data_option = click.option(
    "--data", "data_dir", type=click.Path(path_type=Path), default=None,
    help="Data directory (default: $PACS_DATA_DIR or ./var).",
)


def friendly_errors(fn):
    """Turn expected errors into one line on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApplianceError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


def resolve_data_dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else config_mod.default_data_dir()


def load_config(data_dir: Path | None) -> config_mod.Config:
    from .datadir import is_initialized
    from .errors import DataDirError

    data_dir = resolve_data_dir(data_dir)
    if not is_initialized(data_dir):
        raise DataDirError(f"{data_dir} is not an initialised data directory: run `pacs-appliance init --data "
                           f"{data_dir}` first")
    cfg = config_mod.load(data_dir)
    logsetup.configure(cfg.log.level)
    return cfg


@contextlib.contextmanager
def open_appliance(data_dir: Path | None):
    """The appliance of a data directory, built but not started, for one CLI command.

    Index writes run inline (the writer thread is not started); a running server
    may use the same data directory at the same time (SQLite WAL, busy timeout).
    """
    from .app import build

    app = build(load_config(data_dir), with_web=False)
    try:
        yield app
    finally:
        app.index.close()


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
    from .datadir import initialize

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
    from .app import build, serve as run
    from .datadir import initialize, is_initialized

    path = resolve_data_dir(data_dir)
    if not is_initialized(path) and (not path.exists() or not any(path.iterdir())):
        print_init_result(initialize(path))
    cfg = load_config(path)
    run(build(cfg))


from .cli_integrity import verify  # noqa: E402 - commands register after main exists

main.add_command(verify)
from .cli_backup import backup, keys  # noqa: E402

main.add_command(backup)
main.add_command(keys)

from .cli_import import import_  # noqa: E402

main.add_command(import_)
from .cli_dicom import forward, modality, worklist  # noqa: E402

main.add_command(modality)
main.add_command(worklist)
main.add_command(forward)

from .cli_users import user  # noqa: E402

main.add_command(user)

from .cli_system import firstboot, tls  # noqa: E402

main.add_command(firstboot)
main.add_command(tls)

from .cli_storage import storage  # noqa: E402

main.add_command(storage)

from .cli_update import update  # noqa: E402

main.add_command(update)

if __name__ == "__main__":  # pragma: no cover
    main()
