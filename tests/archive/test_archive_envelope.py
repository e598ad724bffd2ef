"""The encrypted object store: round trips, and every kind of damage is detected, never returned as data."""
from __future__ import annotations

import io
import os
import shutil

import pytest

from appliance.archive import Archive, Keyring
from appliance.archive import envelope
from appliance.errors import IntegrityError, KeyStoreError, NotFound

CHUNK = 64


@pytest.fixture
def archive(tmp_path) -> Archive:
    a = Archive(tmp_path / "archive", Keyring.generate(), chunk_size=CHUNK)
    a.create_dirs()
    return a


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7])
def test_round_trip_at_chunk_boundaries(archive, size):
    data = os.urandom(size)
    stored = archive.put_bytes(data)
    assert stored.size == size
    assert archive.read(stored.object_id) == data
    assert all(len(c) <= CHUNK for c in archive.iter_chunks(stored.object_id))
    assert archive.verify(stored.object_id, stored.sha256) == stored.sha256
    # the file on disk is header + sealed chunks (a full chunk is never the final one)
    n_chunks = size // CHUNK + 1
    assert archive._path(stored.object_id).stat().st_size == envelope.HEADER_SIZE + size + n_chunks * envelope.TAG_SIZE


def test_plaintext_is_not_on_disk(archive):
    data = b"SECRET^PATIENT" * 20
    stored = archive.put_bytes(data)
    assert b"SECRET" not in archive._path(stored.object_id).read_bytes()


def test_no_temp_files_left(archive):
    archive.put_bytes(b"x" * 500)
    assert list(archive._tmp_dir.iterdir()) == []


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["header", "first chunk", "last tag"])
def test_flipped_bit_is_detected(archive, where):
    stored = archive.put_bytes(os.urandom(3 * CHUNK + 5))
    path = archive._path(stored.object_id)
    offset = {"header": 20, "first chunk": envelope.HEADER_SIZE + 3, "last tag": path.stat().st_size - 1}[where]
    _flip(path, offset)
    with pytest.raises(IntegrityError):
        archive.read(stored.object_id)
    with pytest.raises(IntegrityError):
        archive.verify(stored.object_id)


def test_swapped_objects_are_detected(archive):
    a = archive.put_bytes(b"a" * 100)
    b = archive.put_bytes(b"b" * 100)
    pa, pb = archive._path(a.object_id), archive._path(b.object_id)
    tmp = pa.with_name("swap")
    shutil.move(pa, tmp)
    shutil.move(pb, pa)
    shutil.move(tmp, pb)
    for object_id in (a.object_id, b.object_id):
        with pytest.raises(IntegrityError):
            archive.read(object_id)


def test_renamed_object_is_detected(archive):
    a = archive.put_bytes(b"a" * 100)
    other = "0" * 32
    target = archive._path(other)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(archive._path(a.object_id), target)
    with pytest.raises(IntegrityError):
        archive.read(other)


@pytest.mark.parametrize("cut", [1, envelope.TAG_SIZE, CHUNK + envelope.TAG_SIZE])
def test_truncation_is_detected(archive, cut):
    stored = archive.put_bytes(os.urandom(2 * CHUNK + 10))
    path = archive._path(stored.object_id)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(IntegrityError):
        archive.read(stored.object_id)


def test_dropped_final_chunk_is_detected(archive):
    # exactly two full chunks: the file ends with an empty final chunk; dropping it must not pass
    stored = archive.put_bytes(os.urandom(2 * CHUNK))
    path = archive._path(stored.object_id)
    path.write_bytes(path.read_bytes()[: -envelope.TAG_SIZE])
    with pytest.raises(IntegrityError):
        archive.read(stored.object_id)


def test_truncated_header(archive):
    stored = archive.put_bytes(b"abc")
    path = archive._path(stored.object_id)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(IntegrityError):
        archive.read(stored.object_id)


def test_wrong_key_id_is_a_keystore_error(archive, tmp_path):
    stored = archive.put_bytes(b"abc" * 10)
    stranger = Archive(archive._root, Keyring.generate(), chunk_size=CHUNK)
    with pytest.raises(KeyStoreError):
        stranger.read(stored.object_id)


def test_right_key_id_wrong_key_is_an_integrity_error(archive):
    stored = archive.put_bytes(b"abc" * 10)
    ring = Keyring.generate()
    ring.archive_keys = {archive.keyring.current_archive_key: os.urandom(32)}
    ring.current_archive_key = archive.keyring.current_archive_key
    with pytest.raises(IntegrityError):
        Archive(archive._root, ring).read(stored.object_id)


def test_rotation_keeps_old_objects_readable(archive):
    old = archive.put_bytes(b"old" * 50)
    new_id = archive.keyring.rotate()
    new = archive.put_bytes(b"new" * 50)
    assert archive.read(old.object_id) == b"old" * 50
    assert archive.read(new.object_id) == b"new" * 50
    assert archive._path(new.object_id).read_bytes()[9:17] == new_id.encode()


def test_missing_object_and_bad_ids(archive):
    with pytest.raises(NotFound):
        archive.read("f" * 32)
    with pytest.raises(NotFound):
        archive._path("../../etc/passwd")


def test_list_ids_and_delete(archive):
    ids = {archive.put_bytes(bytes([i])).object_id for i in range(5)}
    assert set(archive.list_ids()) == ids
    victim = sorted(ids)[0]
    archive.delete(victim)
    assert set(archive.list_ids()) == ids - {victim}


def test_clean_tmp_removes_unfinished_writes(archive):
    (archive._tmp_dir / ("a" * 32)).write_bytes(b"partial")
    assert archive.clean_tmp() == 1
    assert list(archive._tmp_dir.iterdir()) == []


def test_seal_streams_in_bounded_chunks():
    """A large object never needs more than one chunk of plaintext in memory at a time."""
    reads = []

    class Source(io.RawIOBase):
        def __init__(self, total):
            self.left = total

        def readable(self):
            return True

        def read(self, n=-1):
            n = min(n, self.left)
            reads.append(n)
            self.left -= n
            return b"\0" * n

    out = io.BytesIO()
    ring = Keyring.generate()
    size = envelope.seal(Source(10 * CHUNK + 3), out, b"\x01" * 16, ring.current_archive_key,
                         ring.archive_key(ring.current_archive_key), CHUNK)
    assert size == 10 * CHUNK + 3
    assert max(reads) <= CHUNK
