"""Objects written into reserved entries: one fsync per object, and a crash leaves no stray file.

``Archive.put`` (without an object id) seals into an empty file created ahead at its final name,
whose directory entry a batch-wide directory fsync already made durable (store.py explains why).
"""
from __future__ import annotations

import fcntl
import os
import stat

import pytest

from appliance.archive import Archive, Keyring
from appliance.archive import store as store_module
from appliance.archive.store import RESERVED_MODE


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def make(root, keyring) -> Archive:
    a = Archive(root, keyring, chunk_size=64)
    a.create_dirs()
    return a


def object_files(archive: Archive) -> dict[str, int]:
    """Every file under objects/ with its mode."""
    found = {}
    for dirpath, _dirs, files in os.walk(archive._objects_dir):
        for name in files:
            found[name] = stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode)
    return found


def test_put_writes_a_reserved_entry_without_a_directory_fsync(tmp_path, keyring, monkeypatch):
    archive = make(tmp_path / "archive", keyring)
    archive.put_bytes(b"first")  # makes the batch of reserved entries (and their directory fsync)
    synced_dirs = []
    monkeypatch.setattr(store_module, "fsync_dir", lambda path: synced_dirs.append(path))
    stored = [archive.put_bytes(os.urandom(100)) for _ in range(10)]
    assert synced_dirs == []  # the names were durable already: the object's own fsync is enough
    for s in stored:
        assert archive.read(s.object_id) and archive.verify(s.object_id, s.sha256)
        assert object_files(archive)[s.object_id] == 0o600
    assert not any(archive._tmp_dir.iterdir())


def test_reserved_entries_are_no_objects(tmp_path, keyring):
    archive = make(tmp_path / "archive", keyring)
    stored = {archive.put_bytes(os.urandom(10)).object_id for _ in range(3)}
    files = object_files(archive)
    assert {oid for oid, mode in files.items() if mode == RESERVED_MODE}, "a batch was reserved ahead"
    assert set(archive.list_ids()) == stored


def test_start_up_removes_reserved_entries_a_crash_left(tmp_path, keyring):
    root = tmp_path / "archive"
    crashed = make(root, keyring)
    stored = {crashed.put_bytes(os.urandom(10)).object_id for _ in range(3)}
    assert len(object_files(crashed)) > len(stored)

    restarted = make(root, keyring)  # the process died: its pool of reserved entries is gone with it
    assert restarted.clean_tmp() > 0
    assert set(object_files(restarted)) == stored
    assert set(restarted.list_ids()) == stored
    assert not any((root / "reserved").iterdir())  # no directory left to look at next time
    assert restarted.put_bytes(b"next").object_id in set(restarted.list_ids())


def test_start_up_spares_an_entry_a_live_writer_holds(tmp_path, keyring):
    root = tmp_path / "archive"
    live = make(root, keyring)
    live.put_bytes(b"x")
    reserved = [oid for oid, mode in object_files(live).items() if mode == RESERVED_MODE]
    held = live._path(reserved[0])
    fd = os.open(held, os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as put holds it while sealing
    try:
        make(root, keyring).clean_tmp()  # another process starting beside it (a CLI import)
        assert held.exists()
        assert (root / "reserved").exists() and any((root / "reserved").iterdir())  # looked at again next time
    finally:
        os.close(fd)


def test_put_still_stores_when_another_start_up_removed_the_reserved_entries(tmp_path, keyring):
    root = tmp_path / "archive"
    live = make(root, keyring)
    first = live.put_bytes(b"first").object_id
    make(root, keyring).clean_tmp()  # removes the unlocked reserved entries of the live process
    stored = live.put_bytes(b"second")
    assert live.read(stored.object_id) == b"second"
    assert set(live.list_ids()) == {first, stored.object_id}


def test_a_failed_write_leaves_nothing(tmp_path, keyring):
    archive = make(tmp_path / "archive", keyring)
    archive.put_bytes(b"x")

    class Broken:
        def read(self, n=-1):
            raise OSError("disk went away")

    before = set(object_files(archive))
    with pytest.raises(OSError):
        archive.put(Broken())
    assert set(object_files(archive)) < before  # the entry it took is gone, nothing half-written stays
