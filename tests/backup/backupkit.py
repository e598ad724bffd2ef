"""Helpers for the backup tests: an appliance built in-process, filled through the ingest path."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import synth
from helpers import init_data_dir

from appliance import config as config_mod
from appliance.app import build
from appliance.ingest import Origin


@dataclass
class Box:
    app: object
    data_dir: Path

    def add_study(self, n: int = 3, patient_id: str = "BKP1", kind: str = "CT", **identity) -> list[str]:
        """Store one study of ``n`` instances through the ingest path; return their SOP Instance UIDs."""
        study_uid = synth.generate_uid()
        uids = []
        for i in range(n):
            ds = synth.make_instance(kind, patient_id=patient_id, study_uid=study_uid, instance_number=i + 1,
                                     **identity)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            self.app.ingestor.store_bytes(buf.getvalue(), Origin("import"))
            uids.append(ds.SOPInstanceUID)
        return uids

    def object_ids(self) -> list[str]:
        from appliance.index.models import Instance

        return [oid for (oid,) in Instance.select(Instance.object_id).tuples().execute(self.app.index.db)]


def make_box(tmp_path: Path, target: str, name: str = "data", **settings) -> Box:
    data_dir = init_data_dir(tmp_path / name)
    env = {"PACS_BACKUP_TARGET": target, **{f"PACS_BACKUP_{k.upper()}": str(v) for k, v in settings.items()}}
    app = build(config_mod.load(data_dir, env=env), with_web=False)
    return Box(app, data_dir)


def sealed_bytes(archive, object_id: str) -> bytes:
    """An object as stored (sealed): what the backup copies byte for byte."""
    with archive.open_sealed(object_id) as fh:
        return fh.read()
