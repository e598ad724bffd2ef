"""Index access for instance versions: replaced objects and held newcomers (``replaced_object``).

Reads run on any thread; ``take_version`` runs inside the writer's transaction.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from .models import ReplacedObject

_SELECT = (
    'SELECT r."object_id", r."sop_uid", r."patient_id", r."study_uid", r."source", r."replaced_at", r."size", '
    'r."sha256", r."held", i."object_id", p."patient_id", st."study_uid" FROM "replaced_object" r '
    'LEFT JOIN "instance" i ON i."sop_uid" = r."sop_uid" LEFT JOIN "series" se ON se."id" = i."series_id" '
    'LEFT JOIN "study" st ON st."id" = se."study_id" LEFT JOIN "patient" p ON p."id" = st."patient_id"')


@dataclass(frozen=True)
class Version:
    object_id: str
    sop_uid: str
    patient_id: str  # of this version ('' when replaced before the box recorded it)
    study_uid: str
    source: str  # who sent it
    replaced_at: datetime.datetime  # when it was displaced, or (held) when it arrived
    size: int
    sha256: str
    held: bool  # a newcomer naming another patient, waiting for an admin; else a former current version
    current_object_id: str | None  # the instance's current object (None: the instance is gone)
    current_patient_id: str | None
    current_study_uid: str | None


def _version(row) -> Version:
    at = row[5]
    if isinstance(at, str):
        at = datetime.datetime.fromisoformat(at)
    return Version(row[0], row[1], row[2], row[3], row[4], at, row[6], row[7], bool(row[8]), row[9], row[10],
                   row[11])


def list_versions(db, sop_uid: str | None = None, held: bool | None = None, limit: int | None = 500) -> list[Version]:
    """Versions, newest first, optionally of one instance or only held / only replaced ones."""
    where, params = [], []
    if sop_uid:
        where.append('r."sop_uid" = ?')
        params.append(sop_uid)
    if held is not None:
        where.append('r."held" = ?')
        params.append(int(held))
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + ' ORDER BY r."replaced_at" DESC, r."id" DESC'
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_version(r) for r in db.execute_sql(sql, params).fetchall()]


def get_version(db, object_id: str) -> Version | None:
    rows = db.execute_sql(_SELECT + ' WHERE r."object_id" = ?', (object_id,)).fetchall()
    return _version(rows[0]) if rows else None


def take_version(db, object_id: str, sha256: str) -> bool:
    """Delete a version's row (it is becoming current, or is discarded); False if it is gone or changed
    meanwhile. Call inside a transaction."""
    return ReplacedObject.delete().where((ReplacedObject.object_id == object_id)
                                         & (ReplacedObject.sha256 == sha256)).execute(db) == 1


def count_held(db) -> int:
    return db.execute_sql('SELECT count(*) FROM "replaced_object" WHERE "held" = 1').fetchone()[0]
