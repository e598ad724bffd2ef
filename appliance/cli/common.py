"""What every ``pacs-appliance`` command shares: the --data option, errors, opening a data directory.

The command modules (cli/*.py) import this, and cli/__init__.py imports them to build the
command group; nothing imports the package but the entry point, so there is no import loop.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click

from .. import config as config_mod
from .. import logsetup
from ..errors import ApplianceError

if TYPE_CHECKING:
    from ..app import Parts

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
    from ..datadir import is_initialized
    from ..errors import DataDirError

    data_dir = resolve_data_dir(data_dir)
    if not is_initialized(data_dir):
        raise DataDirError(f"{data_dir} is not an initialised data directory: run `pacs-appliance init --data "
                           f"{data_dir}` first")
    cfg = config_mod.load(data_dir)
    logsetup.configure(cfg.log.level)
    return cfg


@contextlib.contextmanager
def open_appliance(data_dir: Path | None) -> Iterator[Parts]:
    """The parts of a data directory for one CLI command: each part (``app.index``, ``app.peers``,
    ``app.backup``, ...) is built when the command first uses it, nothing started (``verify`` checks
    the index file before anything opens it).

    Index writes run inline (the writer thread is not started); a running server
    may use the same data directory at the same time (SQLite WAL, busy timeout).
    """
    from ..app import Parts

    parts = Parts(load_config(data_dir))
    try:
        yield parts
    finally:
        parts.close()


