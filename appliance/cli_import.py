"""``pacs-appliance import PATH...``: import files, folders, ZIPs and CD/DVD media (DICOMDIR)."""
from __future__ import annotations

import getpass
import sys
from pathlib import Path

import click

from .cli_common import data_option, friendly_errors, open_appliance


@click.command("import")
@data_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--workers", type=int, default=None,
              help="Files imported at once (default: [inbox] workers from the config).")
@friendly_errors
def import_(data_dir: Path | None, paths: tuple[Path, ...], workers: int | None) -> None:
    """Import DICOM files, folders, ZIP archives and DICOMDIR media into the archive.

    PATHs are only read, never changed. A folder holding a DICOMDIR is read
    through its DICOMDIR. Works whether or not the server is running. Prints
    progress while it runs, then a summary; exits with status 1 if anything
    failed.
    """
    from .importer.oneshot import run_import
    from .ingest import Origin

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in the environment
        user = "unknown"
    with open_appliance(data_dir) as app:
        app.index.start()  # the writer thread: concurrent files share group commits
        app.audit.start()  # per-study "import.store" entries, aggregated
        try:
            summary = run_import(
                app.ingestor, list(paths), Origin("import", f"cli:{user}"),
                member_max_bytes=int(app.config.inbox.zip_member_max_mb) << 20,
                workers=workers or int(app.config.inbox.workers),
            )
        finally:
            app.audit.stop()
        app.audit.record("import.run", user, detail=f"pacs-appliance import: {summary.tally.describe()}")
    for line in summary.lines():
        click.echo(line)
    if summary.tally.failed:
        sys.exit(1)
