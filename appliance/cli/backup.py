"""``pacs-appliance backup run|status|verify|restore`` and ``pacs-appliance keys export-recovery``."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import click

from .common import data_option, friendly_errors, open_appliance


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def backup() -> None:
    """Offsite backup: run it now, see its status, verify the offsite copy, restore a box from it."""


@backup.command("run")
@data_option
@click.option("--resend", is_flag=True,
              help="Forget what this box believes is offsite and check the target again (after the offsite "
                   "copy was lost or replaced); only what the target lacks is sent.")
@friendly_errors
def backup_run(data_dir, resend: bool) -> None:
    """Send everything new to the offsite target now (waits until done)."""
    with open_appliance(data_dir) as app:
        result = app.backup.run(trigger="manual", actor="cli", progress=_say, resend=resend)
    click.echo(f"backup {result.result}: {result.objects} objects sent ({result.adopted} found already offsite), "
               f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s; manifest {result.manifest}")
    if result.error:
        click.echo(f"warning: {result.error}", err=True)
    sys.exit(0 if result.result == "success" else 1)


@backup.command("status")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print the status (and recent runs) as JSON.")
@friendly_errors
def backup_status(data_dir, as_json: bool) -> None:
    """Show the last runs, the age of the last successful backup, and any warning."""
    with open_appliance(data_dir) as app:
        status = app.backup.status()
        history = app.backup.history(10)
    if as_json:
        click.echo(json.dumps({"status": status, "history": history}, indent=2))
        return
    click.echo(f"target:       {status['target'] or '(none configured)'}")
    age = status["last_success_age_hours"]
    click.echo(f"last success: {status['last_success_at'] or 'never'}"
               + (f" ({age:.1f} hours ago)" if age is not None else ""))
    if status["warning_reason"]:
        click.echo(f"{'WARNING' if status['warning'] else 'note'}: {status['warning_reason']}")
    for run in history:
        click.echo(f"  {run['started_at']}  {run['result']:8} {run['trigger']:8} {run['objects']:7} objects "
                   f"{run['bytes'] / 1e6:9.1f} MB  {run['error'][:100]}")


@backup.command("verify")
@data_option
@click.option("--target", "url", default=None, help="Target URL (default: [backup] target).")
@click.option("--sample", type=int, default=20, show_default=True,
              help="Download and decrypt this many random objects (0: presence and sizes only).")
@click.option("--full", is_flag=True, help="Download and decrypt every object.")
@friendly_errors
def backup_verify(data_dir, url, sample: int, full: bool) -> None:
    """Check that every object the newest manifest names is offsite and (sampled or all) decrypts."""
    from ..backup.verify import verify

    with open_appliance(data_dir) as app:
        target = app.backup.open_target(url)
        try:
            report = verify(target, app.archive.keyring, app.keys.recovery_key(), sample=sample, full=full,
                            parallel=app.config.backup.parallel, progress=_say)
        finally:
            target.close()
        app.audit.record("backup.verify", "cli", detail=f"{report.manifest}: {len(report.missing)} missing, "
                                                        f"{len(report.damaged)} damaged")
    click.echo(f"manifest {report.manifest}: {report.objects} objects, {report.present} present, "
               f"{report.decrypted} decrypted and authenticated")
    for name in report.missing:
        click.echo(f"MISSING  {name}")
    for name, why in report.damaged:
        click.echo(f"DAMAGED  {name}: {why}")
    click.echo("offsite copy OK" if report.ok else "offsite copy has problems (see above)")
    sys.exit(0 if report.ok else 4)


@backup.command("restore")
@click.option("--target", "url", required=True, help="Where the backup is: file:///..., sftp://..., s3://...")
@click.option("--recovery-key-file", type=click.File("r"), required=True,
              help="File holding the recovery key printed at init (or exported with keys export-recovery).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="A new, empty data directory to restore into.")
@click.option("--study", "studies", multiple=True, help="Restore only this Study Instance UID (repeatable).")
@click.option("--patient", "patients", multiple=True, help="Restore only this Patient ID's studies (repeatable).")
@click.option("--ssh-key", default="", help="Private key for an sftp:// target.")
@click.option("--known-hosts", type=click.Path(path_type=Path), default=None,
              help="known_hosts file pinning the SFTP server's key (created on first use).")
@click.option("--s3-endpoint-url", default="", help="Endpoint of S3-compatible storage (default AWS).")
@click.option("--parallel", type=int, default=4, show_default=True, help="Objects downloaded at once.")
@click.option("--index-url", default="", metavar="URL",
              help="Restore the index into this empty PostgreSQL database (postgresql://...) instead of the "
                   "embedded SQLCipher file; the new appliance.toml names it.")
@click.option("--index-allow-insecure", is_flag=True,
              help="Allow an index server on another machine without TLS (only on a trusted network).")
@friendly_errors
def backup_restore(url, recovery_key_file, data_dir, studies, patients, ssh_key, known_hosts, s3_endpoint_url,
                   parallel, index_url, index_allow_insecure) -> None:
    """Rebuild a box from the offsite copy and the recovery key into an empty data directory.

    S3 credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the usual AWS files.
    """
    from ..archive.keys import parse_recovery_key
    from ..backup.restore import restore
    from ..backup.targets import open_target

    recovery_key = parse_recovery_key(recovery_key_file.read())
    with tempfile.TemporaryDirectory() as tmp:
        pinned = known_hosts or Path(tmp) / "known_hosts"
        target = open_target(url, sftp_key_file=ssh_key, known_hosts=pinned, s3_endpoint_url=s3_endpoint_url)
        try:
            report = restore(target, recovery_key, data_dir, studies=studies, patients=patients,
                             parallel=parallel, progress=_say, index_url=index_url,
                             allow_insecure=index_allow_insecure)
        finally:
            target.close()
        if pinned.exists():  # the restored box's own backups keep checking the same host key
            shutil.copyfile(pinned, data_dir / "keys" / "backup_known_hosts")
    rate = report.bytes / 1e6 / report.seconds if report.seconds else 0
    click.echo(f"restored {report.restored} of {report.objects} objects ({report.bytes / 1e6:.1f} MB, "
               f"{rate:.1f} MB/s) from {report.manifest} into {data_dir}")
    for name in report.missing:
        click.echo(f"MISSING  {name}")
    for name, why in report.damaged:
        click.echo(f"DAMAGED  {name}: {why} (not restored)")
    if report.ok:
        click.echo(f"Start the box with: pacs-appliance serve --data {data_dir}")
        click.echo("Re-apply this box's settings (AE title, ports, backup target) in its appliance.toml.")
    else:
        click.echo("the restore is INCOMPLETE: the objects above could not be restored; the index still lists "
                   "them, and `pacs-appliance verify` will report them")
    sys.exit(0 if report.ok else 4)


@click.group()
def keys() -> None:
    """The box's keys."""


@keys.command("export-recovery")
@data_option
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write the recovery key to this new file (mode 0600) instead of printing it.")
@friendly_errors
def export_recovery(data_dir, output) -> None:
    """Show the recovery key (admins only: whoever has it and the offsite copy has every image)."""
    from ..archive.keys import format_recovery_key

    with open_appliance(data_dir) as app:
        text = format_recovery_key(app.keys.recovery_key())
        app.audit.record("keys.export_recovery", "cli", detail=f"to {'file' if output else 'terminal'}")
    if output:
        import os

        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        click.echo(f"recovery key written to {output}")
    else:
        click.echo(text)
