"""Helpers for the import tests: a server with a fast inbox, index counts, synthetic files."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import synth
from helpers import Server, wait_until

FAST_INBOX = {"PACS_INBOX_STABLE_SECONDS": "0.4", "PACS_INBOX_POLL_SECONDS": "1"}


def start_server(data_dir: Path, **env) -> Server:
    return Server(data_dir, env={**FAST_INBOX, **env}).start()


def index_counts(data_dir: Path) -> dict:
    """Instances in the index, and the per-study/per-patient counters C-FIND reports."""
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from indexkit import counters

    cfg = load(data_dir, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return counters(index)
    finally:
        index.close()


def audit_details(data_dir: Path, action: str) -> list[tuple[str, str]]:
    """(actor, detail) of the audit entries with ``action``, oldest first."""
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.records.audit import AuditLog

    cfg = load(data_dir, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return [(e.actor, e.detail) for e in AuditLog(index).query(action=action, newest_first=False, limit=None)]
    finally:
        index.close()


def inbox_files(data_dir: Path, include_failed: bool = False) -> list[Path]:
    inbox = data_dir / "inbox"
    found = []
    for dirpath, dirs, files in os.walk(inbox):
        if Path(dirpath) == inbox and not include_failed:
            dirs[:] = [d for d in dirs if d not in ("failed", "processed")]
        found.extend(Path(dirpath) / f for f in files)
    return found


def wait_inbox_empty(data_dir: Path, timeout: float = 30):
    wait_until(lambda: not inbox_files(data_dir), timeout, what="the inbox to empty")


def write_many(directory: Path, n: int, per_series: int = 50) -> list[Path]:
    """``n`` synthetic CT instances in one study (fresh UIDs), a folder per series."""
    paths: list[Path] = []
    series = 0
    while len(paths) < n:
        count = min(per_series, n - len(paths))
        paths += synth.write_study(directory / f"series{series}", n_series=1, per_series=count,
                                   study_uid=_study_uid(directory))
        series += 1
    return paths


_STUDIES: dict = {}


def _study_uid(directory: Path) -> str:
    from pydicom.uid import generate_uid

    return _STUDIES.setdefault(str(directory), generate_uid())


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path
