"""``pacs-appliance import PATH...``: import files, folders, ZIPs and CD/DVD media (DICOMDIR);
``pacs-appliance import failed list|show|retry|export|delete``: the encrypted quarantine of failed imports."""
from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from .common import data_option, friendly_errors, open_appliance


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in the environment
        return "unknown"


class _ImportGroup(click.Group):
    """``import PATH...`` stays as it was; ``import failed ...`` is a subcommand (a path literally named
    "failed" is given as ./failed)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["paths", *args]
        return super().parse_args(ctx, args)


@click.group("import", cls=_ImportGroup)
def import_() -> None:
    """Import DICOM files, folders, ZIP archives and DICOMDIR media: `import [--data DIR] PATH...`.

    `import failed ...` lists, retries, exports and deletes the files the inbox could not import (kept
    encrypted in the archive's quarantine).
    """


@import_.command("paths", hidden=True)
@data_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--workers", type=int, default=None,
              help="Files imported at once (default: [inbox] workers from the config).")
@friendly_errors
def import_paths(data_dir: Path | None, paths: tuple[Path, ...], workers: int | None) -> None:
    """Import DICOM files, folders, ZIP archives and DICOMDIR media into the archive.

    PATHs are only read, never changed. A folder holding a DICOMDIR is read
    through its DICOMDIR. Works whether or not the server is running. Prints
    progress while it runs, then a summary; exits with status 1 if anything
    failed.
    """
    from ..importer.oneshot import run_import
    from ..ingest import Origin

    user = _user()
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


@import_.group("failed")
def failed() -> None:
    """Files the inbox could not import, sealed in the encrypted quarantine with their reason."""


@failed.command("list")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (with the full reasons).")
@friendly_errors
def failed_list(data_dir, as_json: bool) -> None:
    """List failed imports, newest first: id, when, size, name in the inbox and why."""
    with open_appliance(data_dir) as app:
        items = app.failed_imports.list()
    if as_json:
        click.echo(json.dumps([vars(i) for i in items], indent=2))
        return
    if not items:
        click.echo("no failed imports")
    for i in items:
        first = i.reason.splitlines()[0] if i.reason else ""
        click.echo(f"{i.item_id}  {i.at}  {i.size:>10}  {i.name}\n    {first}")


@failed.command("show")
@data_option
@click.argument("item_id")
@friendly_errors
def failed_show(data_dir, item_id: str) -> None:
    """Show one failed import with its full reason."""
    with open_appliance(data_dir) as app:
        i = app.failed_imports.get(item_id)
    click.echo(f"id:      {i.item_id}\nname:    {i.name}\nwhen:    {i.at}\nfrom:    {i.origin}\n"
               f"size:    {i.size} bytes\nreason:  {i.reason}")


def _ids(app, item_ids: tuple[str, ...], every: bool) -> list[str]:
    if every:
        return [i.item_id for i in app.failed_imports.list()]
    if not item_ids:
        raise click.UsageError("name one or more ids (from `import failed list`), or --all")
    return list(item_ids)


@failed.command("retry")
@data_option
@click.argument("item_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Retry every failed import.")
@friendly_errors
def failed_retry(data_dir, item_ids: tuple[str, ...], every: bool) -> None:
    """Import failed items again (after fixing the cause); what now goes in leaves the quarantine.
    Exits with status 1 if any failed again."""
    user, again = _user(), 0
    with open_appliance(data_dir) as app:
        for item_id in _ids(app, item_ids, every):
            r = app.failed_imports.retry(item_id, user)
            again += not r.imported
            click.echo(f"{item_id}  {'imported' if r.imported else 'FAILED AGAIN'}: {r.summary}")
    if again:
        sys.exit(1)


@failed.command("export")
@data_option
@click.argument("item_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Export every failed import.")
@click.option("--to", "folder", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write the plaintext files into (created 0700 if missing).")
@friendly_errors
def failed_export(data_dir, item_ids: tuple[str, ...], every: bool, folder: Path) -> None:
    """Write failed imports as their original PLAINTEXT files (patient data!) into a folder; audited."""
    from ..archive.fsutil import private_dir

    user = _user()
    with open_appliance(data_dir) as app:
        private_dir(folder)
        for item_id in _ids(app, item_ids, every):
            click.echo(str(app.failed_imports.export_to(item_id, folder, user)))


@failed.command("delete")
@data_option
@click.argument("item_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Delete every failed import.")
@click.confirmation_option(prompt="Delete these failed imports for good?")
@friendly_errors
def failed_delete(data_dir, item_ids: tuple[str, ...], every: bool) -> None:
    """Delete failed imports from the quarantine for good; audited."""
    user = _user()
    with open_appliance(data_dir) as app:
        for item_id in _ids(app, item_ids, every):
            i = app.failed_imports.delete(item_id, user)
            click.echo(f"deleted {i.item_id}  {i.name}")
