"""``pacs-appliance verify``: prove every archive object is intact."""
from __future__ import annotations

import sys

import click

from ..errors import IntegrityError
from .common import data_option, friendly_errors, open_appliance


@click.command()
@data_option
@click.option("--sample", type=int, default=None, help="Check only this many randomly chosen objects.")
@friendly_errors
def verify(data_dir, sample) -> None:
    """Check the index (SQLite integrity check of an embedded one, rows against the archive), then every archive object's
    authentication tags and its index row; exit 4 on any damage."""
    from ..services.verify import check_index, summarize, verify_all

    with open_appliance(data_dir) as app:
        index_report = check_index(app.config.index_path, app.keyring.index_key, app.archive, lambda: app.index,
                                   index_file=not app.config.index.url)
        for line in index_report.lines():
            click.echo(line)
        if index_report.problems:  # nothing more is read from a damaged index, nor written to it
            sys.exit(IntegrityError.exit_code)
        with click.progressbar(length=1, label="verifying", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(1)

            report = verify_all(app.archive, app.index, sample=sample, progress=progress)
        app.audit.record("archive.verify", "cli", detail=f"checked={report.checked} damaged={len(report.damaged)} "
                                                         f"missing={len(report.missing)}")
    for line in summarize(report):
        click.echo(line)
    sys.exit(0 if report.ok and index_report.ok else IntegrityError.exit_code)
