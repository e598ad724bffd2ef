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
