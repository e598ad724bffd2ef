"""Backup and restore across index backends: a box on either backend, restored onto either (folder target).

The offsite snapshot has one format (a SQLCipher file, sealed) whichever backend the box uses: a
PostgreSQL index is copied into it row by row (index/transfer.py); a restore with ``index_url`` copies
it into an empty PostgreSQL database. Cases that need PostgreSQL run in the PostgreSQL pass
(PACS_TEST_INDEX=postgresql, tests/pg_cluster.py).
"""
from __future__ import annotations

import os
import subprocess

import pytest
from backupkit import Box
from helpers import ADMIN_PASSWORD, CLI

from appliance.records import accounts
from appliance import config as config_mod
from appliance.app import build
from appliance.records.audit import AuditLog
from appliance.backup.restore import restore
from appliance.backup.targets import FolderTarget
from appliance.backup.verify import verify


def _init(path, url: str):
    pw = path.parent / f"{path.name}.pw"
    pw.write_text(ADMIN_PASSWORD)
    env = {k: v for k, v in os.environ.items() if k != "PACS_INDEX_URL"}
    if url:
        env["PACS_INDEX_URL"] = url
    subprocess.run(CLI + ["init", "--data", str(path), "--admin-password-file", str(pw)], check=True,
                   capture_output=True, env=env, timeout=120)
    return path


def _state(app) -> dict:
    index = app.index
    return {
        "studies": index.search("STUDY", {}),
        "instances": sorted((r["SOPInstanceUID"], r["_object_id"]) for r in index.search("IMAGE", {})),
        "users": sorted((u.username, u.role) for u in index.accounts.users()),
        "peers": [p.ae_title for p in index.peers.list()],
    }


@pytest.mark.parametrize("box_backend, restored_backend", [("sqlite", "sqlite"), ("postgresql", "sqlite"),
                                                           ("sqlite", "postgresql"), ("postgresql", "postgresql")])
def test_a_backup_restores_onto_either_backend(tmp_path, pg_cluster, box_backend, restored_backend):
    if pg_cluster is None and "postgresql" in (box_backend, restored_backend):
        pytest.skip("needs the PostgreSQL cluster (PACS_TEST_INDEX=postgresql)")
    nas = tmp_path / "nas"
    nas.mkdir()
    data = _init(tmp_path / "box", pg_cluster.fresh_url() if box_backend == "postgresql" else "")
    app = build(config_mod.load(data, env={"PACS_BACKUP_TARGET": f"file://{nas}"}), with_web=False)
    try:
        box = Box(app, data)
        box.add_study(3, patient_id="BKX1", patient_name="MÜLLER^BACKUP")
        box.add_study(2, patient_id="BKX2", kind="MR")
        app.index.writer.run(lambda: accounts.create_user(app.index.accounts, "drbk", "a-long-password-for-bk",
                                                          "clinician"))
        app.index.peers.add("BKPEER", host="127.0.0.1", port=104)
        result = app.backup.run()
        assert result.result == "success" and result.objects == 5, result
        report = verify(FolderTarget(nas), app.archive.keyring, app.keys.recovery_key(), full=True)
        assert report.ok and report.decrypted == 5
        expected = _state(app)
        recovery_key = app.keys.recovery_key()
    finally:
        app.index.close()
    assert not list(nas.rglob("*.db"))  # nothing but sealed blobs offsite

    url = pg_cluster.fresh_url() if restored_backend == "postgresql" else ""
    new_dir = tmp_path / "restored"
    restored = restore(FolderTarget(nas), recovery_key, new_dir, index_url=url)
    assert restored.ok and restored.restored == 5
    assert config_mod.load(new_dir, env={}).index.url == url  # the restored box's appliance.toml names its index
    assert (new_dir / "index.db").exists() == (not url) and not list(new_dir.glob("index.db.part*"))
    again = build(config_mod.load(new_dir, env={"PACS_BACKUP_TARGET": f"file://{nas}"}), with_web=False)
    try:
        assert _state(again) == expected
        assert AuditLog(again.index).verify().ok
        for oid in (oid for _uid, oid in expected["instances"]):
            with again.archive.open_sealed(oid) as fh:
                assert fh.read(1)
        # The restored box backs up again (its index, whichever backend, snapshots and lists the target).
        assert again.backup.run().result == "success"
    finally:
        again.index.close()


def test_restore_onto_a_postgresql_database_that_holds_rows_is_refused(tmp_path, pg_cluster):
    if pg_cluster is None:
        pytest.skip("needs the PostgreSQL cluster (PACS_TEST_INDEX=postgresql)")
    nas = tmp_path / "nas"
    nas.mkdir()
    data = _init(tmp_path / "box", "")
    app = build(config_mod.load(data, env={"PACS_BACKUP_TARGET": f"file://{nas}"}), with_web=False)
    try:
        Box(app, data).add_study(1, patient_id="BKX3")
        assert app.backup.run().result == "success"
        recovery_key = app.keys.recovery_key()
    finally:
        app.index.close()
    url = pg_cluster.fresh_url()
    _init(tmp_path / "other", url)  # a box's index already lives there
    with pytest.raises(Exception, match="not empty"):
        restore(FolderTarget(nas), recovery_key, tmp_path / "restored", index_url=url)
