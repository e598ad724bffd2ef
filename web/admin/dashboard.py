"""What the dashboard shows, gathered from the appliance's parts (no Flask here, so it can be benchmarked).

Every query is bounded: counts come from the per-study counters ingest keeps, and
"recent" questions use the index on ``instance.received_at`` (counts and limits, never a
scan of every recent row), so the page stays fast on a large index (bench/README.md).
"""
from __future__ import annotations

import datetime
import logging
import shutil
from dataclasses import dataclass, field

from appliance.index import multi_values, utcnow
from appliance.index.studies import TOTALS_MAX_AGE, StudiesRepo


log = logging.getLogger(__name__)
INGEST_WINDOW = datetime.timedelta(days=7)  # the ingest rate that projects "days until full"


def disk_warn_level(total: int, reserve: int) -> int:
    """Free bytes below which the dashboard and /healthz warn: the reserve plus the larger of the
    reserve and 5% of the disk (at the reserve itself new images are already refused)."""
    return reserve + max(reserve, total // 20)


@dataclass
class Disk:
    total: int
    used: int
    free: int
    reserve: int
    bytes_per_day: float
    days_until_full: float | None  # None: nothing received lately, no projection

    @property
    def used_pct(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0


@dataclass
class Dashboard:
    patients: int
    studies: int
    instances: int
    disk: Disk
    last_hour: list[dict]  # [{"source": "dicom:CT1@10.0.0.5", "instances": n}]
    latest_studies: list[dict]
    associations: list[dict]
    errors: list[dict]
    backup: dict | None
    web_sessions: int = 0
    warnings: list[str] = field(default_factory=list)
    integrity: dict | None = None  # the last background verification: checked, damaged, missing, finished_at
    recycle: dict | None = None  # appliance.services.recycle.Recycler.status(): on/off, last run, totals, warning


def integrity_status(appliance) -> dict | None:
    """The last sampled verification (None: not enabled or not run yet)."""
    report = appliance.verifier.last if appliance.verifier is not None else None
    if report is None:
        return None
    return {"checked": report.checked, "damaged": len(report.damaged), "missing": len(report.missing),
            "ok": report.ok, "finished_at": report.finished_at}


def disk_status(appliance, now: datetime.datetime | None = None) -> Disk:
    now = now or utcnow()
    usage = shutil.disk_usage(appliance.config.archive_dir)
    reserve = appliance.config.storage.reserve_mb * (1 << 20)
    bytes_per_day = ingest_rate(appliance.index.studies, now)
    usable = max(usage.free - reserve, 0)
    days = usable / bytes_per_day if bytes_per_day > 0 and arrivals_for_a_day(appliance.index.studies, now) else None
    return Disk(usage.total, usage.used, usage.free, reserve, bytes_per_day, days)


def arrivals_for_a_day(studies: StudiesRepo, now: datetime.datetime) -> bool:
    """Whether images have arrived for at least a day: a forecast from a new box's first hour is noise."""
    first = studies.first_arrival()
    return first is not None and now - first >= datetime.timedelta(days=1)


def ingest_rate(studies: StudiesRepo, now: datetime.datetime, sample: int = 500) -> float:
    """Bytes per day received over the last week (or since the first arrival, if later).

    Estimated as (instances in the window, an index-only count) x (mean size of the newest
    ``sample`` instances), so it costs the same with 1,000 or 1,000,000 recent instances;
    summing every size in the window took ~100-800 ms at 100,000 instances.
    """
    n, first = studies.received_since(now - INGEST_WINDOW)
    if not n:
        return 0.0
    mean_size = studies.mean_size_of_newest(sample)
    span = max((now - first).total_seconds(), 3600.0) if first else INGEST_WINDOW.total_seconds()
    return n * mean_size / (span / 86400.0)


def last_hour(studies: StudiesRepo, now: datetime.datetime) -> list[dict]:
    return [{"source": source_ae(source) or "unknown", "instances": n}
            for source, n in studies.sources_since(now - datetime.timedelta(hours=1))]


def latest_studies(studies: StudiesRepo, limit: int = 10) -> list[dict]:
    return [{
        "study_uid": s.study_uid, "patient_name": s.patient_name.replace("^", " ").strip(),
        "patient_id": s.patient_id, "study_date": s.study_date, "description": s.description,
        "modalities": ", ".join(s.modalities), "instances": s.num_instances,
        "source": source_ae(s.last_source) if s.last_received_at else "", "received_at": s.last_received_at,
    } for s in studies.latest_studies(limit)]


def source_ae(source: str) -> str:
    """"dicom:CT1@10.0.0.5" -> "CT1 (10.0.0.5)"; other origins as they are."""
    kind, _, detail = (source or "").partition(":")
    if kind == "dicom" and detail:
        ae, _, host = detail.partition("@")
        return f"{ae} ({host})" if host else ae
    return source


def gather(appliance, recent_errors=None, sessions=None) -> Dashboard:
    now = utcnow()
    repo = appliance.index.studies
    patients, studies, instances = repo.totals(max_age=TOTALS_MAX_AGE)
    warnings = []
    associations, backup = [], None
    try:
        associations = appliance.node.active_associations()
    except Exception:  # noqa: BLE001 - one broken panel must not take the dashboard down
        log.exception("dashboard: listing DICOM associations failed")
    try:
        backup = appliance.backup.status()
    except Exception as exc:  # noqa: BLE001
        log.exception("dashboard: backup status failed")
        warnings.append(f"Backup status unavailable: {exc}")
    disk = disk_status(appliance, now)
    if disk.free <= disk.reserve:
        warnings.append("The disk is full: new images are being refused.")
    elif disk.free < disk_warn_level(disk.total, disk.reserve):
        warnings.append(f"Disk space is low: {(disk.free - disk.reserve) >> 20} MiB left before new images are "
                        f"refused (the {disk.reserve >> 20} MiB reserve). Free space or add a disk.")
    elif disk.days_until_full is not None and disk.days_until_full < 30:
        warnings.append(f"At the recent rate the disk is full in about {disk.days_until_full:.0f} days.")
    if backup and backup.get("warning"):
        warnings.append(f"Backup: {backup.get('warning_reason')}")
    integrity = integrity_status(appliance)
    recycle = None
    try:
        recycle = appliance.recycler.status()
        recycle["recent"] = [{
            "study_uid": r.study_uid, "patient_name": r.patient_name.replace("^", " ").strip(),
            "patient_id": r.patient_id, "study_date": r.study_date, "accession": r.accession,
            "modalities": ", ".join(multi_values(r.modalities)), "instances": r.num_instances,
            "recycled_at": r.recycled_at} for r in appliance.recycler.recycled(limit=5)] \
            if recycle["offsite_only"] else []
        if recycle["warning"]:
            warnings.append(f"Recycling: {recycle['warning']}.")
    except Exception:  # noqa: BLE001 - one broken panel must not take the dashboard down
        log.exception("dashboard: recycling status failed")
    if integrity and not integrity["ok"]:
        warnings.append(f"Integrity: the last check found {integrity['damaged']} damaged and {integrity['missing']} "
                        "missing image(s); run `pacs-appliance verify` and restore them from the backup.")
    return Dashboard(
        patients=patients, studies=studies, instances=instances, disk=disk,
        last_hour=last_hour(repo, now), latest_studies=latest_studies(repo), associations=associations,
        errors=recent_errors.entries(limit=8) if recent_errors is not None else [], backup=backup,
        web_sessions=sessions.active_count() if sessions is not None else 0, warnings=warnings,
        integrity=integrity, recycle=recycle,
    )
