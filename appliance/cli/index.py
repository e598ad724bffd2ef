"""``pacs-appliance index ...``: rebuild the index from the archive, take a snapshot, check it (issue 15)."""
from __future__ import annotations

import sys

import click

from .common import data_option, friendly_errors, load_config, open_appliance
from ..errors import ConfigError


@click.group()
def index() -> None:
    """The index: rebuild it from the archive, snapshot it, check it, move it to PostgreSQL."""


@index.command()
@data_option
@click.option("--workers", type=int, default=None, help="Processes decrypting and parsing (default: one per core).")
@friendly_errors
def rebuild(data_dir, workers) -> None:
    """Rebuild the index from the archive and its newest sound snapshot (stop the service first).

    Safe to interrupt: run it again and it goes on where it stopped."""
    from ..app import Parts
    from ..datalock import hold
    from ..index.rebuild import rebuild as run

    parts = Parts(load_config(data_dir))
    cfg = parts.config
    if cfg.index.url:
        raise ConfigError("this box's index is a PostgreSQL database ([index] url): `index rebuild` rebuilds the "
                          "embedded index file; restore the database on its server instead")
    hold(cfg.data_dir, "index rebuild")  # refuses while `serve` runs; released when this process ends
    with click.progressbar(length=1, label="rebuilding the index", file=sys.stderr, show_eta=True,
                           show_pos=True) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        report = run(cfg.index_path, parts.archive, parts.keyring, cfg.archive_dir, workers=workers,
                     progress=progress, snapshot_keep=cfg.index.snapshot_keep)
    for line in report.lines():
        click.echo(line)
    sys.exit(4 if report.unreadable else 0)


@index.command()
@data_option
@friendly_errors
def snapshot(data_dir) -> None:
    """Take a sealed index snapshot into the archive now (the box takes one every [index] snapshot_hours)."""
    from ..services.snapshots import IndexSnapshots

    with open_appliance(data_dir) as app:
        cfg = app.config
        snap = IndexSnapshots(app.index, app.keyring.index_key, app.archive, cfg.data_dir, cfg.index.snapshot_keep,
                              cfg.index.snapshot_hours).take()
    click.echo(f"index snapshot {snap.name} ({snap.size // 1024} KiB sealed)")


@index.command()
@data_option
@friendly_errors
def check(data_dir) -> None:
    """SQLite's full integrity check of the index (an embedded one), and its rows against the archive; exit 4 on
    any problem."""
    from ..services.verify import check_index

    with open_appliance(data_dir) as app:
        report = check_index(app.config.index_path, app.keyring.index_key, app.archive, lambda: app.index,
                             index_file=not app.config.index.url)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 4)


@index.command()
@data_option
@click.option("--to", "url", required=True, metavar="URL",
              help="An empty PostgreSQL database: postgresql://user:password@host:port/dbname (TLS to another "
                   "machine: ?sslmode=verify-full&sslrootcert=...).")
@click.option("--allow-insecure", is_flag=True,
              help="Allow a server on another machine without TLS (only on a trusted network).")
@friendly_errors
def migrate(data_dir, url, allow_insecure) -> None:
    """Move this box's index from its SQLCipher file into PostgreSQL (stop the service first).

    Every table is copied in one transaction and its rows counted; then [index] url is written into the
    data directory's appliance.toml and the SQLite file is kept, renamed, for a way back."""
    from ..app import Parts
    from ..index.postgres import redact
    from ..index_migration import migrate as run, rollback_hint

    parts = Parts(load_config(data_dir))
    cfg = parts.config
    report = run(cfg, parts.keyring.index_key, url, allow_insecure)
    for table, rows in report.transfer.rows.items():
        click.echo(f"{table:24} {rows:>10} rows copied and counted")
    click.echo(f"the index is now {redact(url)}: {report.transfer.total} rows in {len(report.transfer.rows)} tables")
    click.echo(f"{report.config_path} names it ([index] url); start the service again")
    click.echo(f"the SQLite index is kept as {report.kept}; {rollback_hint(cfg.data_dir, report.kept)}")
