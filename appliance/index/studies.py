"""Patients, studies, series and instances: reads, the ingest recording, replaced versions.

Searching by DICOM attributes is the query engine's job (query.py, through
``Index.search``); this repository answers the direct questions the rest of
the appliance asks (one instance by UID, the instances of a study, counts,
what arrived lately).
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Callable

from peewee import fn

from ..records.instances import InstanceAttributes, Outcome, PriorVersion, StoredInstance
from . import records
from .models import Instance, Patient, Series, Study
from .query import multi_values
from .repository import Repository

TOTALS_MAX_AGE = 10.0  # seconds the dashboard's and /metrics' totals may lag (StudiesRepo.totals)
__all__ = ["InstanceLocation", "RecentStudy", "StudiesRepo"]


@dataclass(frozen=True)
class InstanceLocation:
    """One instance of a study with what serving it needs (DICOMweb, the viewer, exports)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    object_id: str
    transfer_syntax: str
    frames: int | None
    rows: int | None = None
    patient_id: str = ""


@dataclass(frozen=True)
class RecentStudy:
    """A study as the dashboard lists it, with its newest instance's arrival."""

    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    description: str
    modalities: list[str]
    num_instances: int
    last_source: str  # "" when the study has no instance left
    last_received_at: datetime.datetime | None


class StudiesRepo(Repository):
    # --- one instance ------------------------------------------------------------------------------

    def find_instance(self, sop_uid: str) -> StoredInstance | None:
        return records.lookup(self.db, sop_uid)

    def stored_digest(self, sop_uid: str) -> tuple[str, str] | None:
        """(sha256, object_id) of the indexed instance with this UID (every incoming object asks)."""
        return self.writer.read(lambda: records.stored_digest(self.db, sop_uid))

    # --- writing (inside the writer) ---------------------------------------------------------------

    def record(self, a: InstanceAttributes, object_id: str, size: int, sha256: str, source: str,
               on_conflict: str = "replace", decide: Callable[[PriorVersion], str] | None = None) -> Outcome:
        """Index one stored object. Inside the writer (ingest calls it from its writer function);
        ``decide`` is the replacement policy (records.record)."""
        return records.record(self.db, a, object_id, size, sha256, source, on_conflict, decide)

    def remove_instance(self, instance: StoredInstance) -> None:
        """Delete an instance row and keep the counts right. Inside the writer."""
        records.remove_instance(self.db, instance)

    # --- a study's instances -------------------------------------------------------------------------

    def study_instances(self, study_uid: str, series_uid: str | None = None,
                        sop_uid: str | None = None) -> list[InstanceLocation]:
        """The instances of a study (or of one series, or one instance), in series then instance order."""
        # Only the columns needed, as tuples: building model rows costs more than the query here.
        query = (Instance.select(Series.series_uid, Instance.sop_uid, Instance.sop_class_uid, Instance.object_id,
                                 Instance.transfer_syntax, Instance.frames, Instance.rows, Patient.patient_id)
                 .join(Series).join(Study).join(Patient).where(Study.study_uid == study_uid))
        if series_uid is not None:
            query = query.where(Series.series_uid == series_uid)
        if sop_uid is not None:
            query = query.where(Instance.sop_uid == sop_uid)
        query = query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
        return [InstanceLocation(study_uid, *row) for row in query.tuples().execute(self.db)]

    def first_object_id(self, *, series_id: int | None = None, study_id: int | None = None) -> str | None:
        """The archive object of the first instance of a series or study (by the ``_id`` of a search
        record), for attributes the index does not keep."""
        query = Instance.select(Instance.object_id).join(Series)
        if series_id is not None:
            query = query.where(Series.id == series_id)
        else:
            query = query.join(Study).where(Study.id == study_id)
        return query.order_by(Instance.instance_number, Instance.id).scalar(self.db)

    def patient_id_of(self, study_uid: str) -> str | None:
        """The PatientID of a stored study, or None."""
        return (Study.select(Patient.patient_id).join(Patient).where(Study.study_uid == study_uid)
                .scalar(self.db))

    # --- totals and what arrived lately (each bounded: see web/admin/dashboard.py) ----------------------

    _totals: tuple[float, tuple[int, int, int]] | None = None  # (when counted, totals): totals(max_age)
    _clock = staticmethod(time.monotonic)

    def totals(self, max_age: float = 0.0) -> tuple[int, int, int]:
        """(patients, studies, instances), from the per-study counters ingest keeps.

        ``max_age`` > 0: the last counts, if they were made at most that many seconds ago. Counting reads
        the whole study table (1M instances: ~15 ms of CPU idle, 0.1-0.2 s on a busy box), which the
        dashboard and /metrics need not pay on every view (``TOTALS_MAX_AGE``)."""
        if max_age > 0:
            last = self._totals
            if last is not None and 0 <= self._clock() - last[0] <= max_age:
                return last[1]
        counted = self._count_totals()
        self._totals = (self._clock(), counted)
        return counted

    def _count_totals(self) -> tuple[int, int, int]:
        patients = Patient.select().count(self.db)
        studies, instances = (Study.select(fn.COUNT(Study.id), fn.COALESCE(fn.SUM(Study.num_instances), 0))
                              .scalar(self.db, as_tuple=True))
        return patients, studies, instances

    def received_since(self, since: datetime.datetime) -> tuple[int, datetime.datetime | None]:
        """How many instances arrived since ``since``, and when the first of them did."""
        n = Instance.select().where(Instance.received_at >= since).count(self.db)
        if not n:
            return 0, None
        first = Instance.select(fn.MIN(Instance.received_at)).where(Instance.received_at >= since).scalar(self.db)
        if isinstance(first, str):  # MIN() over a column loses the field's conversion
            first = datetime.datetime.fromisoformat(first)
        return n, first

    def first_arrival(self) -> datetime.datetime | None:
        """When the first instance still on the box arrived (None on an empty box)."""
        first = Instance.select(fn.MIN(Instance.received_at)).scalar(self.db)
        return datetime.datetime.fromisoformat(first) if isinstance(first, str) else first

    def mean_size_of_newest(self, sample: int) -> float:
        newest = Instance.select(Instance.size).order_by(Instance.received_at.desc()).limit(sample)
        return Instance.select(fn.AVG(newest.c.size)).from_(newest).scalar(self.db) or 0

    def sources_since(self, since: datetime.datetime, limit: int = 10) -> list[tuple[str, int]]:
        """(source, instances) received since ``since``, busiest first."""
        return list(Instance.select(Instance.source, fn.COUNT(Instance.id))
                    .where(Instance.received_at >= since)
                    .group_by(Instance.source).order_by(fn.COUNT(Instance.id).desc()).limit(limit)
                    .tuples().execute(self.db))

    def latest_studies(self, limit: int = 10) -> list[RecentStudy]:
        """The studies most recently changed, newest first."""
        rows = (Study.select(Study.id, Study.study_uid, Patient.name, Patient.patient_id, Study.study_date,
                             Study.description, Study.modalities, Study.num_instances)
                .join(Patient).order_by(Study.updated_at.desc()).limit(limit).tuples().execute(self.db))
        out = []
        for study_id, study_uid, name, patient_id, date, description, modalities, n in rows:
            latest = (Instance.select(Instance.source, Instance.received_at).join(Series)
                      .where(Series.study == study_id).order_by(Instance.received_at.desc())
                      .dicts().first(self.db))
            out.append(RecentStudy(study_uid, name, patient_id, date, description, multi_values(modalities), n,
                                   latest["source"] if latest else "", latest["received_at"] if latest else None))
        return out
