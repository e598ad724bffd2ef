"""A process killed between the two steps of a deletion: start-up finishes it, reconciliation stays clean."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from helpers import free_port
from recyclekit import MiB, make_recycle_box

from appliance import config as config_mod
from appliance.app import build
from appliance.index.models.recycle import RecycledObject
from appliance.index.reconcile import reconcile

# Runs in a child process: recycle one study, and die (SIGKILL-like: no clean-up at all) right after the
# index transaction committed, before a single archive file was deleted.
CHILD = textwrap.dedent("""
    import os, sys
    from appliance import config as config_mod
    from appliance.app import build
    app = build(config_mod.load(sys.argv[1]), with_web=False)
    app.archive.disk_free_bytes = lambda: 0  # far below the watermark
    app.recycler._purge = lambda _id: os._exit(9)
    app.recycler.run(trigger="crash test")
    sys.exit(1)  # not reached
""")


def test_kill_between_index_and_files_leaves_no_orphans(tmp_path):
    box = make_recycle_box(tmp_path, recycle_free_below_mb=3, recycle_target_free_mb=4)
    try:
        box.add_study("A")
        box.add_study("B")
        assert box.app.backup.run(trigger="manual").result == "success"
        box.age("A", 50)
        box.age("B", 40)
        ids = box.object_ids("A") + box.object_ids("B")
    finally:
        box.app.index.close()
    env = dict(os.environ, **{k: v for k, v in _env(box).items()})
    child = subprocess.run([sys.executable, "-c", CHILD, str(box.data_dir)], env=env, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 9, child.stderr

    cfg = config_mod.load(box.data_dir, env={**_env(box), "PACS_DICOM_PORT": str(free_port()),
                                              "PACS_STORAGE_RECYCLE": "false"})
    app = build(cfg, with_web=False)
    try:
        # The study is gone from the index, its files are still there: without the recycler's start-up step,
        # reconciliation would call them orphans (damage).
        assert RecycledObject.select().where(RecycledObject.purged_at.is_null()).count(app.index.db) == 2
        assert all(app.archive.exists(o) for o in ids[:2])
        app.start()
        assert app.reconciliation.clean, app.reconciliation
        assert not any(app.archive.exists(o) for o in ids[:2]) and all(app.archive.exists(o) for o in ids[2:])
        assert RecycledObject.select().where(RecycledObject.purged_at.is_null()).count(app.index.db) == 0
        assert not (app.config.archive_dir / "orphans").exists()
    finally:
        app.stop()


def test_reconcile_alone_would_report_the_leftovers(tmp_path):
    """Why the start-up step exists (and the order index-then-files): the leftovers look like orphans."""
    box = make_recycle_box(tmp_path, recycle_free_below_mb=3, recycle_target_free_mb=4)
    try:
        box.add_study("A")
        box.app.backup.run(trigger="manual")
        box.age("A", 50)
        box.capacity = box.archive_bytes() + 2 * MiB
        box.app.recycler._purge = lambda _id: 0  # the files stay, as after a kill
        assert len(box.app.recycler.run().recycled) == 1
        assert len(reconcile(box.app.archive, box.app.index).orphans) == 2
    finally:
        box.app.index.close()


def _env(box) -> dict:
    return {"PACS_BACKUP_TARGET": f"file://{box.nas}", "PACS_INBOX_ENABLED": "false", "PACS_STORAGE_RESERVE_MB": "1",
            "PACS_STORAGE_RECYCLE": "true", "PACS_STORAGE_RECYCLE_FREE_BELOW_MB": "3",
            "PACS_STORAGE_RECYCLE_TARGET_FREE_MB": "4", "PACS_STORAGE_RECYCLE_MIN_AGE_DAYS": "7",
            "PACS_HTTP_PORT": str(free_port())}


def test_restore_cut_short_leaves_nothing_behind(tmp_path):
    import pytest

    from appliance.backup import manifest as mf
    from appliance.errors import NotFound

    box = make_recycle_box(tmp_path, recycle_free_below_mb=3, recycle_target_free_mb=4)
    try:
        box.add_study("A", n=3)
        box.app.backup.run(trigger="manual")
        box.age("A", 50)
        ids = box.object_ids("A")
        box.capacity = box.archive_bytes() + 2 * MiB
        assert len(box.app.recycler.run().recycled) == 1
        gone = box.nas / mf.object_name(ids[1])
        kept = gone.read_bytes()
        gone.unlink()  # the target lost one object
        box.capacity += 10 * MiB
        with pytest.raises(NotFound, match="missing from"):
            box.app.recycler.restore(box.studies["A"])
        assert box.find("A") == [] and not any(box.app.archive.exists(o) for o in ids)
        assert box.app.recycler.finish_interrupted() == 3  # staged downloads and intent rows cleared
        assert not box.app.recycler.staging.ids()
        assert reconcile(box.app.archive, box.app.index).clean
        gone.write_bytes(kept)  # back on the target: the restore now works
        assert box.app.recycler.restore(box.studies["A"]).instances == 3
        assert reconcile(box.app.archive, box.app.index).clean
    finally:
        box.app.index.close()
