"""When the index snapshots come: counted from the newest generation, not from each start (services/snapshots.py)."""
from __future__ import annotations

import datetime

from appliance import config as config_mod
from appliance.app import Parts
from appliance.archive.snapshots import Snapshot
from appliance.services.snapshots import START_GRACE_SECONDS, IndexSnapshots, first_delay
from helpers import init_data_dir

HOUR = 3600.0
NOW = datetime.datetime(2026, 12, 2, 12, 0, 0)


def _taken(hours_ago: float) -> Snapshot:
    return Snapshot("x", NOW - datetime.timedelta(hours=hours_ago), 1)


def test_the_first_snapshot_comes_when_the_newest_generation_is_due():
    assert first_delay(None, NOW, 6 * HOUR) == 0  # none on the shelf: at once
    assert first_delay(_taken(1), NOW, 6 * HOUR) == 5 * HOUR  # a restart does not reset the clock
    assert first_delay(_taken(5.99), NOW, 6 * HOUR) == START_GRACE_SECONDS  # due, but not in the first minutes
    assert first_delay(_taken(30), NOW, 6 * HOUR) == START_GRACE_SECONDS  # overdue (the box was off)
    assert first_delay(_taken(-48), NOW, 6 * HOUR) == 6 * HOUR  # the clock went back: one interval at most
    assert first_delay(_taken(30), NOW, 60.0) == 60.0  # never later than the interval


def test_a_restart_takes_no_snapshot_while_the_newest_is_recent(tmp_path):
    data_dir = init_data_dir(tmp_path / "data")
    cfg = config_mod.load(data_dir)
    parts = Parts(cfg)
    try:
        service = IndexSnapshots(parts.index, parts.keyring.index_key, parts.archive, cfg.data_dir, 3, 6)
        first = service.take()
        service.start()  # the newest is seconds old: the first round is hours away
        assert service._task.first_after > 5 * HOUR
        service.stop()
        assert [s.name for s in parts.archive.snapshots.list()] == [first.name]
    finally:
        parts.close()


def test_copies_of_unfinished_snapshots_are_removed_but_not_one_being_taken(tmp_path):
    """A stop or crash mid-snapshot leaves a copy of the whole index (~400 MB at 1M instances) in the data
    directory; the next start removes it, and leaves alone a take still running in another process."""
    import fcntl
    import os

    from appliance.services.snapshots import clean_stale

    def files(stem: str) -> list:
        made = [tmp_path / f"{stem}.lock", tmp_path / f"{stem}.tmp", tmp_path / f"{stem}.tmp-journal"]
        for p in made:
            p.write_bytes(b"x")
        return made

    dead = files(".index-snapshot-dead0001")
    alive = files(".index-snapshot-a11ve002")
    orphan = tmp_path / ".index-snapshot-old00003.tmp"  # no lock file: left by an older version
    orphan.write_bytes(b"x")
    other = tmp_path / "index.db"
    other.write_bytes(b"x")
    fd = os.open(alive[0], os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: as another process's take holds it
        assert clean_stale(tmp_path) == 2
        assert not any(p.exists() for p in dead + [orphan])
        assert all(p.exists() for p in alive) and other.exists()
    finally:
        os.close(fd)
    assert clean_stale(tmp_path) == 1 and not any(p.exists() for p in alive)
