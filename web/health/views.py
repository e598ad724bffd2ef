"""/healthz for monitoring (no patient data, no login) and /metrics in Prometheus text format.

/healthz answers 200 when every check passes and 503 otherwise, with one line per
check in JSON: process, index (a read), archive (directory writable), disk (free
space above the store reserve), dicom (the listener accepts TCP connections).
A check that passes but needs attention says ``"warn": true`` and makes the status
"warn" (still 200): the disk does when the space left above the reserve is smaller
than the reserve itself or than 5% of the disk, long before images are refused.

/metrics is open to the addresses in ``[http] metrics_allowed`` and to requests
carrying ``Authorization: Bearer <[http] metrics_token>``; anything else gets 403.
"""
from __future__ import annotations

import datetime
import hmac
import ipaddress
import os
import shutil

from flask import Response, abort, current_app, jsonify, request

from ..admin.dashboard import TOTALS_MAX_AGE, disk_warn_level
from ..current import appliance as _app
from . import bp


def _check(fn_):
    try:
        detail = fn_()
        return {"ok": True, "detail": detail}
    except Warning_ as exc:
        return {"ok": True, "warn": True, "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failing check is the answer, not an error
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}


def _dicom_listening(appliance) -> str:
    # Looks at the listening socket instead of connecting: a bare TCP connect makes pynetdicom log an
    # aborted association at ERROR level on every probe.
    listening = appliance.node.listening()  # the plain and/or the TLS listener
    if not listening:
        raise RuntimeError("the DICOM listener is not running")
    return "listening on " + ", ".join(listening)


class Warning_(Exception):
    """A check that passes but needs attention soon (its message is the detail)."""


def _disk(appliance) -> str:
    usage = shutil.disk_usage(appliance.config.archive_dir)
    reserve = appliance.config.storage.reserve_mb * (1 << 20)
    if usage.free <= reserve:
        raise RuntimeError(f"{usage.free >> 20} MiB free, at or below the {reserve >> 20} MiB reserve")
    if usage.free < disk_warn_level(usage.total, reserve):
        raise Warning_(f"{usage.free >> 20} MiB free, only {(usage.free - reserve) >> 20} MiB above the "
                       f"{reserve >> 20} MiB reserve: images are refused at the reserve; free space or add a disk")
    return f"{usage.free >> 20} MiB free"


def _archive(appliance) -> str:
    path = appliance.config.archive_dir
    if not os.access(path, os.W_OK | os.X_OK):
        raise RuntimeError("archive directory is not writable")
    return "writable"


@bp.get("/healthz")
def healthz():
    appliance = _app()
    checks = {
        "process": {"ok": True, "detail": f"pid {os.getpid()}"},
        "index": _check(lambda: (appliance.index.probe(), "readable")[1]),
        "archive": _check(lambda: _archive(appliance)),
        "disk": _check(lambda: _disk(appliance)),
        "dicom": _check(lambda: _dicom_listening(appliance)),
    }
    ok = all(c["ok"] for c in checks.values())
    warn = any(c.get("warn") for c in checks.values())
    response = jsonify(status="failing" if not ok else "warn" if warn else "ok", checks=checks)
    response.status_code = 200 if ok else 503
    return response


def _metrics_allowed() -> bool:
    http = _app().config.http
    token = http.metrics_token
    header = request.headers.get("Authorization", "")
    if token and header.lower().startswith("bearer ") and hmac.compare_digest(header[7:].strip(), token):
        return True
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    for allowed in http.metrics_allowed:
        try:
            if address in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            continue
    return False


def _line(out: list, name: str, kind: str, help_: str, samples) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        label_text = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        out.append(f"{name}{label_text} {value}")


@bp.get("/metrics")
def metrics():
    if not _metrics_allowed():
        abort(Response("metrics are not open to this address: see [http] metrics_allowed and metrics_token\n",
                       403, {"Content-Type": "text/plain; charset=utf-8"}))
    appliance = _app()
    web = current_app.extensions["pacs_web"]
    received, associations = web.metrics.snapshot()
    out: list[str] = []
    _line(out, "pacs_up", "gauge", "1 while the appliance process serves.", [({}, 1)])
    _line(out, "pacs_start_time_seconds", "gauge", "Process start, Unix time.", [({}, f"{web.metrics.started:.0f}")])
    _line(out, "pacs_instances_received_total", "counter", "Instances stored since start, by way in.",
          [({"origin": k}, v) for k, v in sorted(received.items())] or [({"origin": "dicom"}, 0)])
    _line(out, "pacs_associations_total", "counter", "DICOM associations since start, by outcome.",
          [({"result": r}, associations.get(r, 0)) for r in ("accepted", "rejected")])
    node = appliance.node
    active = len(node.active_associations())
    _line(out, "pacs_associations_active", "gauge", "DICOM associations open now.", [({}, active)])
    counts = web.recent_errors.counts
    _line(out, "pacs_log_messages_total", "counter", "Warnings and errors logged since start (failures).",
          [({"level": lvl}, counts.get(lvl, 0)) for lvl in ("WARNING", "ERROR", "CRITICAL")])
    patients, studies, instances = appliance.index.studies.totals(max_age=TOTALS_MAX_AGE)
    _line(out, "pacs_patients", "gauge", "Patients in the index.", [({}, patients)])
    _line(out, "pacs_studies", "gauge", "Studies in the index.", [({}, studies)])
    _line(out, "pacs_instances", "gauge", "Instances in the index.", [({}, instances)])
    usage = shutil.disk_usage(appliance.config.archive_dir)
    _line(out, "pacs_disk_total_bytes", "gauge", "Size of the archive's file system.", [({}, usage.total)])
    _line(out, "pacs_disk_free_bytes", "gauge", "Free space on the archive's file system.", [({}, usage.free)])
    _line(out, "pacs_disk_reserve_bytes", "gauge", "Free space below which stores are refused.",
          [({}, appliance.config.storage.reserve_mb * (1 << 20))])
    try:
        status = appliance.backup.status()
    except Exception:  # noqa: BLE001 - the other metrics still matter
        status = {"warning": True}
    age = status.get("last_success_age_hours")
    _line(out, "pacs_backup_configured", "gauge", "1 when an offsite target is set.",
          [({}, int(bool(status.get("configured"))))])
    _line(out, "pacs_backup_age_seconds", "gauge",
          "Seconds since the last successful backup (-1: none yet).",
          [({}, -1 if age is None else f"{age * 3600:.0f}")])
    _line(out, "pacs_backup_warning", "gauge", "1 when the backup is late or failing.",
          [({}, int(bool(status.get("warning"))))])
    report = appliance.verifier.last if appliance.verifier is not None else None
    if report is not None:
        _line(out, "pacs_verify_last_checked", "gauge", "Objects checked by the last background verification.",
              [({}, report.checked)])
        _line(out, "pacs_verify_last_damaged", "gauge", "Damaged or missing objects the last verification found.",
              [({}, len(report.damaged) + len(report.missing))])
        if report.finished_at is not None:
            _line(out, "pacs_verify_last_time_seconds", "gauge", "When the last background verification ended.",
                  [({}, f"{report.finished_at.replace(tzinfo=datetime.timezone.utc).timestamp():.0f}")])
    _recycle_metrics(out, appliance.recycler)
    return Response("\n".join(out) + "\n", headers={"Cache-Control": "no-store"},
                    content_type="text/plain; version=0.0.4; charset=utf-8")


def _recycle_metrics(out: list, recycler) -> None:
    """Storage recycling (appliance/services/recycle.py): counters from the index, so they survive restarts."""
    status = recycler.status()
    _line(out, "pacs_recycle_enabled", "gauge", "1 when studies confirmed offsite may be deleted to free space.",
          [({}, int(status["enabled"]))])
    _line(out, "pacs_recycled_studies_total", "counter", "Studies recycled (deleted locally, kept offsite), ever.",
          [({}, status["recycled_studies"])])
    _line(out, "pacs_recycled_bytes_total", "counter", "Bytes freed on the local disk by recycling, ever.",
          [({}, status["recycled_bytes"])])
    _line(out, "pacs_recycle_offsite_only_studies", "gauge",
          "Recycled studies not restored: their only copy is offsite.",
          [({}, status["offsite_only"])])
    _line(out, "pacs_recycle_warning", "gauge", "1 when the disk is nearly full and nothing more can be recycled.",
          [({}, int(bool(status["warning"])))])
    last = status["last"]
    if last is not None:
        _line(out, "pacs_recycle_last_blocked_studies", "gauge",
              "Studies the last recycling run had to keep (not yet offsite, or still to forward).",
              [({}, last["blocked"])])
        _line(out, "pacs_recycle_last_run_time_seconds", "gauge", "When the last recycling run ended.",
              [({}, f"{last['at'].replace(tzinfo=datetime.timezone.utc).timestamp():.0f}")])
