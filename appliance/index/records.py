"""Writing index rows for one instance: run inside the writer's transaction.

The counts that C-FIND reports are maintained here, incrementally, so that a
query never aggregates over the instance table.
"""
from __future__ import annotations

import logging
from typing import Callable

from peewee import Database

from ..errors import ConflictRejected
from ..records.instances import InstanceAttributes, Outcome, PriorVersion, StoredInstance
from .models import Instance, Patient, ReplacedObject, Series, Study, utcnow
from .names import fold
from .repository import to_record

log = logging.getLogger(__name__)


def _add_value(multi: str, value: str) -> str:
    if not value or f"\\{value}\\" in multi:
        return multi
    items = sorted([v for v in multi.split("\\") if v] + [value])
    return "\\" + "\\".join(items) + "\\"


def lookup(db: Database, sop_uid: str) -> StoredInstance | None:
    row = (Instance.select(Instance, Instance.series.alias("series_id")).where(Instance.sop_uid == sop_uid)
           .dicts().first(db))
    return None if row is None else to_record(StoredInstance, row)


def stored_digest(db: Database, sop_uid: str) -> tuple[str, str] | None:
    """(sha256, object_id) of the indexed instance with this UID. Plain SQL: this runs for every
    incoming object, and building the equivalent peewee query costs more than running it."""
    return _one(db, 'SELECT "sha256", "object_id" FROM "instance" WHERE "sop_uid" = ?', sop_uid)


# record runs for every stored object, inside the single writer (writer.py). It is written in
# plain SQL because building the same statements with peewee cost more than running them (about
# 60 % of the writer's time when profiled). Column lists follow models/core.py; the schema tests
# (tests/index) read the rows back through the models, so a drift shows there. New rows say their id with
# RETURNING (SQLite and PostgreSQL alike; psycopg has no lastrowid).
_FIND_SERIES = (
    'SELECT se."id", st."id", p."id", p."patient_key", st."modalities", st."sop_classes" '
    'FROM "series" se JOIN "study" st ON se."study_id" = st."id" JOIN "patient" p ON st."patient_id" = p."id" '
    'WHERE se."series_uid" = ?')
_FIND_STUDY = (
    'SELECT NULL, st."id", p."id", p."patient_key", st."modalities", st."sop_classes" '
    'FROM "study" st JOIN "patient" p ON st."patient_id" = p."id" WHERE st."study_uid" = ?')
_FIND_PATIENT = 'SELECT "id" FROM "patient" WHERE "patient_key" = ?'
_NEW_PATIENT = (
    'INSERT INTO "patient" ("patient_key", "patient_id", "issuer", "name", "name_upper", "birth_date", "sex", '
    '"num_studies", "num_series", "num_instances", "created_at", "updated_at") '
    "VALUES (?, ?, ?, '', '', '', '', 0, 0, 0, ?, ?) RETURNING \"id\"")
_NEW_STUDY = (
    'INSERT INTO "study" ("patient_id", "study_uid", "study_date", "study_time", "accession", "study_id", '
    '"description", "referring_physician", "patient_age", "institution", "modalities", "sop_classes", '
    '"num_series", "num_instances", "created_at", "updated_at") '
    "VALUES (?, ?, '', '', '', '', '', '', '', '', '\\', '\\', 0, 0, ?, ?) RETURNING \"id\"")
_NEW_SERIES = (
    'INSERT INTO "series" ("study_id", "series_uid", "modality", "series_number", "description", "body_part", '
    '"series_date", "series_time", "station_name", "num_instances", "created_at") '
    "VALUES (?, ?, '', NULL, '', '', '', '', '', 0, ?) RETURNING \"id\"")
# A value the instance does not carry never blanks out one an earlier instance gave.
_KEEP = "COALESCE(NULLIF(?, ''), \"{0}\")"
_COUNT_PATIENT = (
    'UPDATE "patient" SET "num_studies" = "num_studies" + ?, "num_series" = "num_series" + ?, '
    '"num_instances" = "num_instances" + 1, "updated_at" = ? WHERE "id" = ?')
_NAME_PATIENT = (
    'UPDATE "patient" SET "name" = ?, "name_upper" = ?, "birth_date" = ' + _KEEP.format("birth_date")
    + ', "sex" = ' + _KEEP.format("sex") + ' WHERE "id" = ?')
_STUDY_COLUMNS = ("study_date", "study_time", "accession", "study_id", "description", "referring_physician",
                  "patient_age", "institution")
_UPDATE_STUDY = (
    'UPDATE "study" SET ' + ", ".join(f'"{c}" = ' + _KEEP.format(c) for c in _STUDY_COLUMNS)
    + ', "modalities" = ?, "sop_classes" = ?, "num_series" = "num_series" + ?, '
    '"num_instances" = "num_instances" + 1, "updated_at" = ? WHERE "id" = ?')
_SERIES_COLUMNS = ("modality", "description", "body_part", "series_date", "series_time", "station_name")
_UPDATE_SERIES = (
    'UPDATE "series" SET ' + ", ".join(f'"{c}" = ' + _KEEP.format(c) for c in _SERIES_COLUMNS)
    + ', "series_number" = COALESCE(?, "series_number"), "num_instances" = "num_instances" + 1 WHERE "id" = ?')
_NEW_INSTANCE = (
    'INSERT INTO "instance" ("series_id", "sop_uid", "sop_class_uid", "instance_number", "transfer_syntax", '
    '"rows", "columns", "frames", "content_date", "content_time", "object_id", "size", "sha256", "source", '
    '"received_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')


_FIND_EXISTING = (
    'SELECT i."sha256", p."patient_key", p."patient_id", st."study_uid", i."source" FROM "instance" i '
    'JOIN "series" se ON i."series_id" = se."id" JOIN "study" st ON se."study_id" = st."id" '
    'JOIN "patient" p ON st."patient_id" = p."id" WHERE i."sop_uid" = ?')


def record(db: Database, a: InstanceAttributes, object_id: str, size: int, sha256: str, source: str,
           on_conflict: str = "replace", decide: Callable[[PriorVersion], str] | None = None) -> Outcome:
    """Index one stored object in ``db``. Call inside a transaction (the writer does).

    When a different object already holds the UID, ``decide(prior)`` (the ingest's policy) returns
    "replace" or "hold", or raises to refuse; without it, ``on_conflict`` says replace or reject.
    """
    outcome = Outcome.STORED
    existing = _one(db, _FIND_EXISTING, a.sop_uid)
    if existing is not None:
        if existing[0] == sha256:
            return Outcome.DUPLICATE
        prior = PriorVersion(a.sop_uid, *existing[1:])
        if decide is not None:
            action = decide(prior)
        elif on_conflict == "reject":
            raise ConflictRejected(
                f"a different object with SOP Instance UID {a.sop_uid} is already stored; "
                "the archive is set to reject such replacements"
            )
        else:
            action = "replace"
        if action == "hold":
            if _one(db, 'SELECT 1 FROM "replaced_object" WHERE "sop_uid" = ? AND "sha256" = ? AND "held" = 1',
                    a.sop_uid, sha256):
                return Outcome.DUPLICATE  # the same held object sent again: held once
            ReplacedObject.insert(sop_uid=a.sop_uid, object_id=object_id, size=size, sha256=sha256, source=source,
                                  patient_id=a.patient_id, study_uid=a.study_uid, held=True,
                                  replaced_at=utcnow()).execute(db)
            return Outcome.HELD
        _replace(db, lookup(db, a.sop_uid), prior)
        outcome = Outcome.REPLACED

    now = utcnow()
    patient_key = f"{a.patient_id}\x1f{a.issuer}"
    # An existing series or study keeps its place in the hierarchy: an instance that names
    # another study or patient (a corrected ID, a typo at the modality) is filed with it, so
    # counts add up and no empty patient or study rows appear. The bytes keep what was sent.
    found = _one(db, _FIND_SERIES, a.series_uid) or _one(db, _FIND_STUDY, a.study_uid)
    new_study = found is None
    if new_study:
        row = _one(db, _FIND_PATIENT, patient_key)
        patient_id = row[0] if row else _one(db, _NEW_PATIENT, patient_key, a.patient_id, a.issuer, now, now)[0]
        study_id = _one(db, _NEW_STUDY, patient_id, a.study_uid, now, now)[0]
        series_id, modalities, sop_classes, own_patient = None, "\\", "\\", True
    else:
        series_id, study_id, patient_id, stored_key, modalities, sop_classes = found
        own_patient = stored_key == patient_key
        if not own_patient:
            log.warning("instance %s names another patient than its stored study %s; filed with the study",
                        a.sop_uid, a.study_uid)
    new_series = series_id is None
    if new_series:
        series_id = _one(db, _NEW_SERIES, study_id, a.series_uid, now)[0]

    if own_patient:
        db.execute_sql(_NAME_PATIENT, (a.patient_name, fold(a.patient_name), a.birth_date, a.sex, patient_id))
    db.execute_sql(_COUNT_PATIENT, (int(new_study), int(new_series), now, patient_id))
    db.execute_sql(_UPDATE_STUDY, (
        a.study_date, a.study_time, a.accession, a.study_id, a.study_description, a.referring_physician,
        a.patient_age, a.institution, _add_value(modalities, a.modality), _add_value(sop_classes, a.sop_class_uid),
        int(new_series), now, study_id))
    db.execute_sql(_UPDATE_SERIES, (
        a.modality, a.series_description, a.body_part, a.series_date, a.series_time, a.station_name,
        a.series_number, series_id))
    db.execute_sql(_NEW_INSTANCE, (
        series_id, a.sop_uid, a.sop_class_uid, a.instance_number, a.transfer_syntax, a.rows, a.columns, a.frames,
        a.content_date, a.content_time, object_id, size, sha256, source, now))
    return outcome


def _one(db, sql: str, *params):
    cursor = db.execute_sql(sql, params)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


def _replace(db: Database, existing: StoredInstance, prior: PriorVersion) -> None:
    """Keep a displaced object recoverable (`storage versions`), then drop its instance row."""
    ReplacedObject.insert(sop_uid=existing.sop_uid, object_id=existing.object_id, size=existing.size,
                          sha256=existing.sha256, source=existing.source, patient_id=prior.patient_id,
                          study_uid=prior.study_uid, held=False, replaced_at=utcnow()).execute(db)
    remove_instance(db, existing)


def remove_instance(db: Database, instance: StoredInstance) -> None:
    """Delete an instance row, keep the counts right and drop emptied parents."""
    series_id = instance.series_id
    study_id, patient_id = (Series.select(Series.study, Study.patient).join(Study)
                            .where(Series.id == series_id).tuples().get(db))
    Instance.delete().where(Instance.id == instance.id).execute(db)
    Series.update(num_instances=Series.num_instances - 1).where(Series.id == series_id).execute(db)
    series_gone = Series.select(Series.num_instances).where(Series.id == series_id).scalar(db) <= 0
    study_changes = {Study.num_instances: Study.num_instances - 1}
    patient_changes = {Patient.num_instances: Patient.num_instances - 1}
    if series_gone:
        Series.delete().where(Series.id == series_id).execute(db)
        study_changes[Study.num_series] = Study.num_series - 1
        patient_changes[Patient.num_series] = Patient.num_series - 1
        modalities = "\\"
        for (modality,) in Series.select(Series.modality).where(Series.study == study_id).tuples().execute(db):
            modalities = _add_value(modalities, modality)
        study_changes[Study.modalities] = modalities
    Study.update(study_changes).where(Study.id == study_id).execute(db)
    if Study.select(Study.num_instances).where(Study.id == study_id).scalar(db) <= 0:
        Study.delete().where(Study.id == study_id).execute(db)
        patient_changes[Patient.num_studies] = Patient.num_studies - 1
    Patient.update(patient_changes).where(Patient.id == patient_id).execute(db)
    if Patient.select(Patient.num_instances).where(Patient.id == patient_id).scalar(db) <= 0:
        Patient.delete().where(Patient.id == patient_id).execute(db)
