"""The Settings page's Test button for the backup target: write, read back and delete a probe object.

Goes through the same target registry and options as the nightly backup
(``BackupService.open_target``), so a passing test means the backup can reach and
write the target with the credentials it will use.
"""
from __future__ import annotations

import io
import secrets

from appliance.errors import ApplianceError

PROBE_PREFIX = "probe"


class ProbeFailed(ApplianceError):
    """The backup target accepted the probe but gave back something else."""

    http_status = 502


def probe(backup, url: str) -> str:
    """Run the probe against ``url``; return what to tell the admin (raises on any failure)."""
    if backup is None:
        raise ProbeFailed("backup is not part of this build")
    if not url:
        raise ProbeFailed("type a backup target first (a folder, sftp://... or s3://...)")
    name = f"{PROBE_PREFIX}/pacs-appliance-test-{secrets.token_hex(8)}"
    data = secrets.token_bytes(4096)
    target = backup.open_target(url)
    try:
        target.put(name, io.BytesIO(data), len(data))
        try:
            with target.open(name) as src:
                back = src.read()
        finally:
            target.delete(name)
        if back != data:
            raise ProbeFailed(f"the target returned {len(back)} bytes that differ from the {len(data)} written")
        if target.size(name) is not None:
            raise ProbeFailed("the probe object is still there after deleting it")
    finally:
        target.close()
    return f"Backup target {target.url} works: a probe object was written, read back and deleted."
