"""Helpers for the recycling tests: a box with a folder backup target and a simulated disk.

The free space the recycler sees is simulated (capacity minus the archive's
files), so a test can put the watermark exactly where it wants without filling
a real disk, and every freed byte shows up at once.
"""
from __future__ import annotations

import datetime
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import synth
from helpers import init_data_dir

from appliance import config as config_mod
from appliance.app import build
from appliance.ingest import Origin

MiB = 1 << 20


@dataclass
class RecycleBox:
    app: object
    data_dir: Path
    nas: Path
    capacity: int = 0
    studies: dict = field(default_factory=dict)  # name -> study UID

    def archive_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.app.config.archive_dir / "objects"):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except FileNotFoundError:  # recycled meanwhile (the concurrency test)
                    pass
        return total

    def free(self) -> int:
        return self.capacity - self.archive_bytes()

    def add_study(self, name: str, n: int = 2, patient_id: str = "RCY1", kind: str = "CT") -> str:
        study_uid = synth.generate_uid()
        for i in range(n):
            self.add_instance(study_uid, patient_id=patient_id, kind=kind, instance_number=i + 1)
        self.studies[name] = study_uid
        return study_uid

    def add_instance(self, study_uid: str, patient_id: str = "RCY1", kind: str = "CT", instance_number: int = 99):
        ds = synth.make_instance(kind, patient_id=patient_id, study_uid=study_uid, instance_number=instance_number)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return self.app.ingestor.store_bytes(buf.getvalue(), Origin("import"))

    def age(self, name: str, days: float) -> None:
        """Pretend every instance of the study arrived ``days`` ago."""
        when = datetime.datetime.utcnow() - datetime.timedelta(days=days)
        self.app.index.db.execute_sql(
            "UPDATE instance SET received_at = ? WHERE series_id IN (SELECT se.id FROM series se "
            "JOIN study s ON s.id = se.study_id WHERE s.study_uid = ?)", (when, self.studies[name]))

    def study_bytes(self, name: str) -> dict[str, bytes]:
        """SOP Instance UID -> the object's bytes, for every instance of the study on the box."""
        rows = self.app.index.db.execute_sql(
            "SELECT i.sop_uid, i.object_id FROM instance i JOIN series se ON se.id = i.series_id "
            "JOIN study s ON s.id = se.study_id WHERE s.study_uid = ?", (self.studies[name],)).fetchall()
        return {sop: self.app.archive.read(oid) for sop, oid in rows}

    def object_ids(self, name: str) -> list[str]:
        return [r[0] for r in self.app.index.db.execute_sql(
            "SELECT i.object_id FROM instance i JOIN series se ON se.id = i.series_id "
            "JOIN study s ON s.id = se.study_id WHERE s.study_uid = ?", (self.studies[name],)).fetchall()]

    def sealed_size(self, name: str) -> int:
        return sum(self.app.archive.sealed_size(oid) for oid in self.object_ids(name))

    def find(self, name: str) -> list:
        """What C-FIND (the one query engine) answers for the study."""
        return self.app.index.search("STUDY", {"StudyInstanceUID": self.studies[name]})


def make_recycle_box(tmp_path: Path, name: str = "data", backup: dict | None = None, **storage) -> RecycleBox:
    nas = tmp_path / f"nas-{name}"
    nas.mkdir()
    data_dir = init_data_dir(tmp_path / name)
    settings = {"reserve_mb": 1, "recycle": "true", "recycle_free_below_mb": 2, "recycle_target_free_mb": 3,
                "recycle_min_age_days": 7, **storage}
    env = {"PACS_BACKUP_TARGET": f"file://{nas}", "PACS_INBOX_ENABLED": "false",
           **{f"PACS_STORAGE_{k.upper()}": str(v) for k, v in settings.items()},
           **{f"PACS_BACKUP_{k.upper()}": str(v) for k, v in (backup or {}).items()}}
    app = build(config_mod.load(data_dir, env=env), with_web=False)
    box = RecycleBox(app, data_dir, nas, capacity=100 * MiB)
    app.archive.disk_free_bytes = box.free  # the recycler and the ingest path both see the simulated disk
    return box
