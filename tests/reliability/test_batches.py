"""Issue 15: the write batches of corrections (appliance/index/unfinished_batches.py) at start-up and in a rebuild, with a real
index and archive in a data directory; the kill -9 end to end is tests/corrections/test_correct_crash.py."""
from __future__ import annotations

import io

from helpers import Server

from appliance import config as config_mod
from appliance.app import Parts
from appliance.index.unfinished_batches import LOCK_NAME, in_flight, settle_for_rebuild
from appliance.index.batches import unfinished


def _seal(parts, object_id: str) -> None:
    parts.archive.put(io.BytesIO(b"sealed, never indexed " + object_id.encode()), object_id)


def test_a_rebuild_indexes_a_batch_sealed_whole_and_sets_a_partial_one_aside(data_dir):
    """An older snapshot may name a batch that committed after it was taken (all its objects sealed: the
    correction whole) or one that never finished (some missing: never indexed, kept with the orphans)."""
    parts = Parts(config_mod.load(data_dir, env={}))
    try:
        whole = [parts.archive.new_object_id() for _ in range(3)]
        partial = [parts.archive.new_object_id() for _ in range(3)]
        parts.index.batches.begin("whole", whole)
        parts.index.batches.begin("partial", partial)
        for oid in whole + partial[:1]:
            _seal(parts, oid)
        present = set(parts.archive.list_ids())
        with parts.index.db.atomic():
            set_aside = settle_for_rebuild(parts.archive, parts.index.db, present)
        assert [(d.batch, d.objects) for d in set_aside] == [("partial", 1)]
        assert set(whole) <= present and partial[0] not in present
        assert not parts.archive.exists(partial[0])
        assert (data_dir / "archive" / "orphans" / partial[0]).exists()
        assert unfinished(parts.index.db) == {}
    finally:
        parts.close()


def test_a_start_beside_a_correction_in_flight_leaves_its_objects_alone(data_dir):
    """A CLI correction may run while `serve` starts: its sealed objects are neither discarded nor orphans
    (and far more than the orphan bound would not stop the start either)."""
    parts = Parts(config_mod.load(data_dir, env={}))
    try:
        ids = [parts.archive.new_object_id() for _ in range(40)]
        parts.index.batches.begin("running", ids)
        for oid in ids:
            _seal(parts, oid)
    finally:
        parts.close()
    with in_flight(data_dir / LOCK_NAME):  # what Ingestor.store_corrected holds while it writes
        server = Server(data_dir).start(timeout=60)
        try:
            assert server.stop(timeout=60) == 0, server.log()
        finally:
            server.kill()
    parts = Parts(config_mod.load(data_dir, env={}))
    try:
        assert all(parts.archive.exists(oid) for oid in ids)
        assert list(unfinished(parts.index.db)) == ["running"]
        assert not (data_dir / "archive" / "orphans").exists() or not any((data_dir / "archive" / "orphans").iterdir())
    finally:
        parts.close()

    # Once nothing is in flight, the next start discards the batch (it can never commit now).
    server = Server(data_dir).start(timeout=60)
    assert server.stop(timeout=60) == 0, server.log()
    assert "interrupted correction (batch running)" in server.log()
    parts = Parts(config_mod.load(data_dir, env={}))
    try:
        assert not any(parts.archive.exists(oid) for oid in ids) and unfinished(parts.index.db) == {}
    finally:
        parts.close()
