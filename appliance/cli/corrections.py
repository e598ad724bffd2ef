"""``pacs-appliance correct ...``: fix a study's patient or study attributes, move a study to another
patient, merge two patient records, move or split a series (corrections/edit.py). Each needs
``--reason``, writes new versions (the originals stay as replaced versions) and is audited."""
from __future__ import annotations

import click

from .common import data_option, friendly_errors, open_appliance

reason_option = click.option("--reason", required=True, help="Why (required; written to the audit log).")


@click.group()
def correct() -> None:
    """Fix mistakes: wrong patient, typo in a name, a series under the wrong study."""


def _done(result) -> None:
    click.echo(f"{result.action}: {result.instances} instance(s) corrected in study "
               f"{' -> '.join(result.study_uids)}")
    for key, value in result.after.items():
        click.echo(f"  {key}: {result.before.get(key, '')!r} -> {value!r}")


@correct.command("study")
@data_option
@click.argument("study_uid")
@click.option("--patient-name", help="DICOM person name, e.g. DOE^JANE.")
@click.option("--patient-id")
@click.option("--birth-date", help="YYYY-MM-DD or YYYYMMDD.")
@click.option("--sex", help="M, F or O.")
@click.option("--accession")
@click.option("--description", help="Study description.")
@click.option("--referring", help="Referring physician (person name).")
@reason_option
@friendly_errors
def study(data_dir, study_uid, patient_name, patient_id, birth_date, sex, accession, description, referring,
          reason) -> None:
    """Correct the patient and study attributes of STUDY_UID (every image of it)."""
    from ..corrections import corrections_of

    given = {"PatientName": patient_name, "PatientID": patient_id, "PatientBirthDate": birth_date,
             "PatientSex": sex, "AccessionNumber": accession, "StudyDescription": description,
             "ReferringPhysicianName": referring}
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        raise click.UsageError("give at least one value to correct (see --help)")
    with open_appliance(data_dir) as app:
        _done(corrections_of(app).edit_study(study_uid, changes, "cli", reason))
        app.audit.flush()


@correct.command("move-study")
@data_option
@click.argument("study_uid")
@click.option("--to-patient", "to_patient", required=True, help="Patient ID of the (existing) right patient.")
@reason_option
@friendly_errors
def move_study(data_dir, study_uid, to_patient, reason) -> None:
    """File STUDY_UID under another patient: that patient's name, ID, birth date and sex are written in."""
    from ..corrections import corrections_of

    with open_appliance(data_dir) as app:
        _done(corrections_of(app).move_study(study_uid, to_patient, "cli", reason))
        app.audit.flush()


@correct.command("merge-patients")
@data_option
@click.argument("from_patient_id")
@click.argument("into_patient_id")
@reason_option
@friendly_errors
def merge_patients(data_dir, from_patient_id, into_patient_id, reason) -> None:
    """Merge two records of one person: every study of FROM_PATIENT_ID moves to INTO_PATIENT_ID."""
    from ..corrections import corrections_of

    with open_appliance(data_dir) as app:
        for result in corrections_of(app).merge_patients(from_patient_id, into_patient_id, "cli", reason):
            _done(result)
        app.audit.flush()


@correct.command("move-series")
@data_option
@click.argument("series_uid")
@click.option("--to-study", help="Study Instance UID to move it into.")
@click.option("--new-study", is_flag=True, help="Split it off into a new study of the same patient instead.")
@reason_option
@friendly_errors
def move_series(data_dir, series_uid, to_study, new_study, reason) -> None:
    """Move SERIES_UID into another study, or split it off into a new study (--new-study)."""
    from ..corrections import corrections_of

    if bool(to_study) == bool(new_study):
        raise click.UsageError("give either --to-study STUDY_UID or --new-study")
    with open_appliance(data_dir) as app:
        _done(corrections_of(app).move_series(series_uid, to_study or None, "cli", reason))
        app.audit.flush()


@correct.command("delete")
@data_option
@click.argument("level", type=click.Choice(["study", "series", "instance"]))
@click.argument("uid")
@reason_option
@friendly_errors
def delete(data_dir, level, uid, reason) -> None:
    """Delete a study, series or instance: gone from search and retrieval at once, kept in the recycle bin
    for [storage] recycle_bin_days and restorable (`correct bin --restore`)."""
    from ..corrections import recycle_bin_of

    with open_appliance(data_dir) as app:
        e = recycle_bin_of(app).delete(level, uid, "cli", reason)
        app.audit.flush()
    click.echo(f"{level} {uid}: {e.instances} instance(s) moved to the recycle bin as deletion {e.batch}; "
               f"restorable until {e.purge_after:%Y-%m-%d %H:%M} UTC")


@correct.command("bin")
@data_option
@click.option("--restore", "batch", help="Restore this deletion (its id from the list).")
@click.option("--purge", is_flag=True, help="Delete now what has been in the bin longer than recycle_bin_days.")
@click.option("--json", "as_json", is_flag=True, help="List as JSON.")
@friendly_errors
def bin_(data_dir, batch, purge, as_json) -> None:
    """List the recycle bin; restore a deletion from it; purge what is due."""
    import json

    from ..corrections import recycle_bin_of

    with open_appliance(data_dir) as app:
        rb = recycle_bin_of(app)
        if batch:
            e = rb.restore(batch, "cli")
            click.echo(f"{e.level} {e.uid}: {e.instances} instance(s) restored")
        elif purge:
            click.echo(f"{rb.purge()} object(s) purged")
        else:
            entries = rb.list()
            if as_json:
                click.echo(json.dumps([dict(e.__dict__, deleted_at=e.deleted_at.isoformat(),
                                            purge_after=e.purge_after.isoformat()) for e in entries], indent=1))
            for e in [] if as_json else entries:
                click.echo(f"{e.batch}  {e.deleted_at:%Y-%m-%d %H:%M}  {e.level:8} {e.uid}  {e.instances} inst.  "
                           f"by {e.deleted_by}: {e.reason}  (until {e.purge_after:%Y-%m-%d})")
        app.audit.flush()


@correct.command("anonymize")
@data_option
@click.argument("study_uid")
@click.option("--output", type=click.Path(dir_okay=False, writable=True),
              help="ZIP file to write (the archive itself is not changed).")
@click.option("--to-peer", "peer_ae", help="Send the copy to this registered peer (AE title) instead.")
@click.option("--reason", required=True, help="What the copy is for (teaching, second opinion); audited.")
@friendly_errors
def anonymize(data_dir, study_uid, output, peer_ae, reason) -> None:
    """Write an anonymized copy of STUDY_UID (DICOM PS3.15 basic de-identification profile) as a ZIP, or
    send it to a peer."""
    import os

    from ..corrections import anonymized_copies_of

    if bool(output) == bool(peer_ae):
        raise click.UsageError("give either --output FILE.zip or --to-peer AE_TITLE")
    with open_appliance(data_dir) as app:
        copies = anonymized_copies_of(app)
        if peer_ae:
            sent, failed, warnings = copies.send(study_uid, peer_ae, app.peers, app.config.dicom.ae_title, "cli",
                                                 reason, timeout=app.config.dicom.dimse_timeout)
            app.audit.flush()
            click.echo(f"{sent} anonymized instance(s) sent to {peer_ae}")
            for w in warnings + [f"not sent: {f}" for f in failed]:
                click.echo(f"warning: {w}", err=True)
            if failed:
                raise SystemExit(1)
            return
        objects, export, warnings = copies.prepare(study_uid, "cli", reason, destination=f"file {output}")
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for chunk in copies.stream_zip(objects, export):
                fh.write(chunk)
        app.audit.flush()
    click.echo(f"{export.objects} anonymized instance(s) written to {output}")
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


@correct.command("apply-worklist")
@data_option
@click.argument("study_uid")
@click.argument("item_id", type=int)
@reason_option
@friendly_errors
def apply_worklist(data_dir, study_uid, item_id, reason) -> None:
    """Apply worklist entry ITEM_ID (`pacs-appliance worklist list`) to STUDY_UID, which arrived without one:
    its patient, accession, procedure and referring physician are written in as a correction."""
    from ..corrections import corrections_of

    with open_appliance(data_dir) as app:
        item = app.worklist.require(item_id)
        _done(corrections_of(app).apply_worklist(study_uid, item, "cli", reason))
        app.audit.flush()
