"""``pacs-appliance storage recycle|recycled|restore``: free space with studies confirmed offsite
(services/recycle.py)."""
from __future__ import annotations

import json
import sys

import click

from .common import data_option, friendly_errors, open_appliance

MiB = 1 << 20


@click.group()
def storage() -> None:
    """Local storage: recycle studies that are safely offsite, list them, bring one back."""


def _row(c, status: str) -> str:
    return (f"  {c.last_used:%Y-%m-%d}  {c.study_uid:<64} {c.study_date or '-':8}  {c.accession or '-':<12} "
            f"{c.instances:6}  {c.bytes / MiB:9.1f}  {status}")


@storage.command("recycle")
@data_option
@click.option("--dry-run", is_flag=True, help="Only list what would be recycled and why; delete nothing.")
@click.option("--limit", type=int, default=50, show_default=True, help="Studies listed at most (0 = all).")
@friendly_errors
def recycle(data_dir, dry_run: bool, limit: int) -> None:
    """Delete the least recently used studies that are confirmed offsite, while free space is below
    [storage] recycle_free_below_mb, until recycle_target_free_mb is free. Every deletion is audited."""
    with open_appliance(data_dir) as app:
        r = app.recycler
        if not r.settings.enabled and not dry_run:
            click.echo("error: recycling is off: set [storage] recycle = true in appliance.toml (and restart) "
                       "first; --dry-run shows what it would do", err=True)
            sys.exit(2)
        report = r.run(trigger="manual", actor="cli", dry_run=dry_run,
                       progress=lambda m: click.echo(m, err=True))
        candidates, total, recent = r.plan(limit=limit or None) if dry_run else ([], 0, report.recent)
    s = r.settings
    click.echo(f"free space {report.free_before / MiB:,.0f} MiB; recycling starts below {s.free_below / MiB:,.0f} "
               f"MiB and stops at {s.target_free / MiB:,.0f} MiB; studies used in the last {s.min_age.days} days "
               f"are kept ({recent} such)" + ("" if s.enabled else "; recycling is OFF"))
    if dry_run:
        going = {c.pk for c in report.recycled}
        click.echo(f"  {'last used':10}  {'study UID':<64} {'date':8}  {'accession':<12} {'inst.':>6}  "
                   f"{'MiB':>9}  what happens")
        for c in candidates[:limit or None]:
            status = ("WOULD RECYCLE" if c.pk in going else
                      "eligible (not needed now)" if c.eligible else f"kept: {c.reason}")
            click.echo(_row(c, status))
        if total > len(candidates):
            click.echo(f"  ... and {total - len(candidates)} more")
    else:
        for c in report.recycled:
            click.echo(_row(c, "recycled"))
        shown = report.blocked[:limit or None]
        for c in shown:
            click.echo(_row(c, f"kept: {c.reason}"))
        if report.blocked_count > len(shown):
            click.echo(f"  ... and {report.blocked_count - len(shown)} more kept")
    click.echo(("dry run: " if dry_run else "") + report.result)


@storage.command("recycled")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@friendly_errors
def recycled(data_dir, as_json: bool) -> None:
    """List the recycled studies whose only copy is offsite (newest first)."""
    with open_appliance(data_dir) as app:
        rows = [{"study_uid": s.study_uid, "study_date": s.study_date, "accession": s.accession,
                 "modalities": s.modalities.strip("\\").replace("\\", ","), "instances": s.num_instances,
                 "bytes": s.bytes, "target": s.target, "recycled_at": s.recycled_at.isoformat(timespec="seconds")}
                for s in app.recycler.recycled(limit=None)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no recycled studies: everything indexed is on this box")
    for row in rows:
        click.echo(f"{row['recycled_at']}  {row['study_uid']:<64} {row['study_date'] or '-':8}  "
                   f"{row['accession'] or '-':<12} {row['modalities']:<8} {row['instances']:6} instances  "
                   f"{row['bytes'] / MiB:9.1f} MiB  on {row['target']}")


@storage.command("restore")
@data_option
@click.argument("study_uid")
@click.option("--parallel", type=int, default=4, show_default=True, help="Objects downloaded at once.")
@friendly_errors
def restore(data_dir, study_uid: str, parallel: int) -> None:
    """Bring a recycled study back from the backup target, byte for byte."""
    with open_appliance(data_dir) as app:
        result = app.recycler.restore(study_uid, actor="cli", parallel=parallel,
                                      progress=lambda m: click.echo(m, err=True))
    click.echo(f"restored study {study_uid}: {result.instances} instance(s), {result.replaced} older version(s), "
               f"{result.bytes / MiB:.1f} MiB; {result.skipped} already on the box")


@storage.command("versions")
@data_option
@click.argument("sop_uid", required=False)
@click.option("--held", is_flag=True, help="Only objects held for an admin (another patient under a stored UID).")
@click.option("--restore", "restore_id", metavar="OBJECT_ID",
              help="Make this version the current instance (accepts a held one); the current becomes a version.")
@click.option("--discard", "discard_id", metavar="OBJECT_ID", help="Delete this HELD object for good.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@friendly_errors
def versions(data_dir, sop_uid: str | None, held: bool, restore_id: str | None, discard_id: str | None,
             as_json: bool) -> None:
    """List the other versions of instances: objects a replacement displaced, and newcomers naming another
    patient that were held for an admin; restore (or accept) one, or discard a held one. Audited."""
    import getpass

    actor = f"cli:{getpass.getuser()}"
    with open_appliance(data_dir) as app:
        if restore_id:
            v = app.versions.restore(restore_id, actor)
            click.echo(f"instance {v.sop_uid}: version {restore_id} is current again"
                       + (f"; the previous object {v.current_object_id} is now a version" if v.current_object_id
                          else ""))
            return
        if discard_id:
            v = app.versions.discard(discard_id, actor)
            click.echo(f"instance {v.sop_uid}: held object {discard_id} discarded")
            return
        rows = app.versions.list(sop_uid, held=True if held else None, limit=None)
    if as_json:
        click.echo(json.dumps([{**vars(v), "replaced_at": v.replaced_at.isoformat(timespec="seconds")}
                               for v in rows], indent=2))
        return
    if not rows:
        click.echo("no held objects" if held else "no other versions: nothing was replaced")
    for v in rows:
        what = "HELD" if v.held else "replaced"
        click.echo(f"{v.replaced_at:%Y-%m-%d %H:%M}  {what:8}  {v.object_id}  SOP Instance UID {v.sop_uid}\n"
                   f"    this version: patient {v.patient_id or '?'}, study {v.study_uid or '?'}, from {v.source}\n"
                   f"    current:      " + (f"patient {v.current_patient_id}, study {v.current_study_uid}"
                                             if v.current_object_id else "(no current instance)"))
