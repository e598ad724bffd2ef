"""Backup to an S3 target: moto's S3 server started by the test on 127.0.0.1.

Why moto is faithful enough here: it is a separate HTTP server speaking the S3
REST API (PutObject, multipart upload, GetObject, HeadObject, ListObjectsV2 with
pagination, DeleteObject), and our target reaches it through the unmodified
boto3/botocore stack - request signing, retries, streaming bodies, error codes
(NoSuchKey, 404) - exactly as it reaches AWS, MinIO or Backblaze B2 with
``endpoint_url``. What it does not model (throttling, latency, storage classes,
object lock) the target does not rely on; S3 itself is strongly consistent.
"""
from __future__ import annotations

import boto3
import pytest
from helpers import free_port

from appliance.backup import manifest as mf
from appliance.backup.restore import restore
from appliance.backup.verify import verify

# The target itself (multipart, short sources, listing, refused keys) is covered by test_target_contract.py.

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="clinic-backup")
    yield endpoint, client
    server.stop()


def test_s3_backup_verify_tamper_restore(tmp_path, s3):
    from backupkit import make_box

    endpoint, client = s3
    box = make_box(tmp_path, "s3://clinic-backup/box1", s3_endpoint_url=endpoint)
    try:
        box.add_study(3, patient_id="S3P1")
        box.add_study(2, patient_id="S3P2", kind="US")
        result = box.app.backup.run()
        assert result.result == "success" and result.objects == 5
        assert box.app.backup.run().objects == 0
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="clinic-backup")["Contents"]]
        assert all(k.startswith("box1/") for k in keys)
        assert sum(k.startswith("box1/objects/") for k in keys) == 5

        target = box.app.backup.open_target()
        report = verify(target, box.app.archive.keyring, box.app.keys.recovery_key(), full=True)
        assert report.ok and report.decrypted == 5

        oid = sorted(box.object_ids())[0]
        key = "box1/" + mf.object_name(oid)
        body = bytearray(client.get_object(Bucket="clinic-backup", Key=key)["Body"].read())
        body[-5] ^= 0xFF
        client.put_object(Bucket="clinic-backup", Key=key, Body=bytes(body))
        report = verify(target, box.app.archive.keyring, full=True)
        assert [n for n, _ in report.damaged] == [mf.object_name(oid)]

        restored = restore(target, box.app.keys.recovery_key(), tmp_path / "restored")
        target.close()
        assert restored.restored == 4 and [n for n, _ in restored.damaged] == [mf.object_name(oid)]
        for other in set(box.object_ids()) - {oid}:
            new = tmp_path / "restored" / "archive" / "objects" / other[:2] / other[2:4] / other
            assert new.read_bytes() == box.app.archive.path(other).read_bytes()
    finally:
        box.app.index.close()


def test_s3_unreachable_fails_cleanly_then_resumes(tmp_path, s3, monkeypatch):
    from backupkit import make_box

    endpoint, client = s3
    box = make_box(tmp_path, "s3://clinic-backup/box2", s3_endpoint_url=endpoint)
    try:
        box.add_study(3, patient_id="S3R")
        box.app.backup.settings.values["s3_endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nobody there
        from appliance.backup.targets import TargetError

        with pytest.raises(TargetError):
            box.app.backup.run()
        assert box.app.backup.status()["last_run"]["result"] == "failed"
        box.app.backup.settings.values["s3_endpoint_url"] = endpoint
        assert box.app.backup.run().result == "success"
    finally:
        box.app.index.close()
