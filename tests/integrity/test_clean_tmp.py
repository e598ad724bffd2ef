"""Start-up cleaning removes abandoned half-written objects, never one a live writer holds."""
import fcntl
import os

from appliance.archive import Archive, Keyring


def test_clean_tmp_spares_live_writers(tmp_path):
    archive = Archive(tmp_path / "archive", Keyring.generate())
    archive.create_dirs()
    (archive._tmp_dir / "abandoned").write_bytes(b"left by a killed process")
    fd = os.open(archive._tmp_dir / "in-progress", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as Archive.put holds it while writing
    try:
        assert archive.clean_tmp() == 1
        assert [p.name for p in archive._tmp_dir.iterdir()] == ["in-progress"]
    finally:
        os.close(fd)
    assert archive.clean_tmp() == 1  # once its writer is gone it is garbage
    assert not any(archive._tmp_dir.iterdir())


def test_put_leaves_nothing_in_tmp(tmp_path):
    archive = Archive(tmp_path / "archive", Keyring.generate(), chunk_size=1024)
    archive.create_dirs()
    stored = archive.put_bytes(os.urandom(5000))
    assert archive.read(stored.object_id) and not any(archive._tmp_dir.iterdir())
