"""Issue 14 item 13 (second half): archive/orphans/ and inbox/processed/ are pruned after a set age.

A real server starts on a data directory holding an orphan (an object with no index row, as a
crash between archive write and index commit leaves) and processed inbox copies, old and new.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from helpers import Server, wait_until

from appliance.archive import Archive, KeyStore
from appliance.config import load

DAY = 86400


def _age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def _orphan(data: Path, days_old: float) -> str:
    """Write an object the index does not name (what a crash before the commit leaves)."""
    cfg = load(data, env={})
    archive = Archive(cfg.archive_dir, KeyStore(cfg.keys_dir).load())
    stored = archive.put_bytes(b"never acknowledged")
    _age(archive._path(stored.object_id), days_old)  # the file itself: this test ages it
    return stored.object_id


def test_server_prunes_old_orphans_and_processed_copies(data_dir):
    old_orphan, new_orphan = _orphan(data_dir, 45), _orphan(data_dir, 1)
    processed = data_dir / "inbox" / "processed"
    (processed / "cd-2025").mkdir(parents=True)
    old_copy, new_copy = processed / "cd-2025" / "old.dcm", processed / "new.dcm"
    old_copy.write_bytes(b"plaintext copy")
    new_copy.write_bytes(b"plaintext copy")
    _age(old_copy, 8)
    _age(new_copy, 2)

    srv = Server(data_dir, env={"PACS_INBOX_PROCESSED_KEEP_DAYS": "7"}).start()
    try:
        orphans = data_dir / "archive" / "orphans"
        wait_until(lambda: not (orphans / old_orphan).exists() and not old_copy.exists(), 20,
                   what="pruning of the old orphan and the old processed copy")
        assert (orphans / new_orphan).exists() and new_copy.exists()
        assert not (processed / "cd-2025").exists()  # emptied folder removed
        wait_until(lambda: "inbox: removed 1 file(s) from processed/ imported more than 7 days ago" in srv.log(),
                   10, what="the processed/ log line")
        assert "pruned 1 orphan object(s) older than 30 days" in srv.log()
    finally:
        srv.stop()


def test_zero_keeps_everything(data_dir):
    orphan = _orphan(data_dir, 400)
    srv = Server(data_dir, env={"PACS_STORAGE_ORPHANS_KEEP_DAYS": "0"}).start()
    srv.stop()  # a clean stop waits for the pruning pass that runs at start-up
    assert "starting pruning" in srv.log()
    assert (data_dir / "archive" / "orphans" / orphan).exists()
