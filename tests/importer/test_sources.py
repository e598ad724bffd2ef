"""In-process checks of the pieces: reading media and ZIPs, and a ZIP interrupted by a full disk."""
from __future__ import annotations

import shutil
import subprocess

import pytest

import synth
from importkit import make_zip
from indexkit import counters


def _cd(tmp_path, n=3):
    cd = tmp_path / "cd"
    (cd / "DIR1").mkdir(parents=True)
    paths = synth.write_study(tmp_path / "src", n_series=1, per_series=n)
    for i, p in enumerate(paths):
        shutil.copy(p, cd / "DIR1" / f"IM{i:06d}")
    assert subprocess.run(["dcmmkdir", "+r", "+id", "."], cwd=cd, capture_output=True).returncode == 0
    return cd


def test_dicomdir_of_a_cd_copied_with_lowercase_names_and_versions(tmp_path):
    """ISO 9660 copies may come out as "dir1/im000000;1": the DICOMDIR's file IDs still resolve."""
    from appliance.importer.sources import media_source

    cd = _cd(tmp_path)
    (cd / "DIR1").rename(cd / "dir1")
    for f in (cd / "dir1").iterdir():
        f.rename(f.with_name(f.name.lower() + ";1"))
    (cd / "DICOMDIR").rename(cd / "dicomdir")
    (cd / "viewer.exe").write_bytes(b"MZ")
    source = media_source(cd / "dicomdir", label_root=None)
    assert not source.error
    assert [e.path.exists() for e in source.entries] == [True, True, True]
    assert all(e.sop_uid for e in source.entries)
    assert source.unlisted == [cd / "viewer.exe"]


def test_damaged_dicomdir_and_zip_are_reported_in_plain_words(tmp_path):
    from appliance.importer.sources import discover

    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "DICOMDIR").write_bytes(b"\0" * 200)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    errors = {s.path.name: s.error for s in discover([tmp_path], 1 << 30)}
    assert errors["DICOMDIR"].startswith("the DICOMDIR cannot be read")
    assert errors["broken.zip"].startswith("the ZIP archive cannot be read")


def test_zip_member_names_are_only_labels_and_nested_zips_open(tmp_path):
    from appliance.importer.sources import zip_source

    inner = make_zip(tmp_path / "inner.zip", {"deep/a.dcm": b"A"})
    make_zip(tmp_path / "outer.zip", {"../../../etc/x": b"X", "/abs/y": b"Y", "nested/inner.zip": inner.read_bytes(),
                                      "__MACOSX/._a": b"", "dir/": b""})
    source = zip_source(tmp_path / "outer.zip", 1 << 20)
    got = {e.label.split(": ", 1)[1]: e.open()[0].read() for e in source.entries}
    source.close()
    assert got == {"../../../etc/x": b"X", "/abs/y": b"Y", "nested/inner.zip: deep/a.dcm": b"A"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner.zip", "outer.zip"]  # nothing extracted


@pytest.fixture
def app(data_dir):
    from appliance.app import build
    from appliance.config import load

    appliance = build(load(data_dir, env={"PACS_STORAGE_RESERVE_MB": "16"}), with_web=False)
    yield appliance
    appliance.index.close()


def test_zip_interrupted_by_a_full_disk_is_retried_whole_and_counted_once(app, data_dir, tmp_path):
    from appliance.errors import DiskFull
    from appliance.importer.watcher import Inbox, InboxSettings
    def counts():
        c = counters(app.index)
        return c["instances"], c["study_counters"]

    files = synth.write_study(tmp_path / "s", n_series=1, per_series=5)
    make_zip(data_dir / "inbox" / "study.zip", {f"x/{p.name}": p.read_bytes() for p in files})

    class FillsUp:
        """The real ingestor, until the disk 'fills' after two objects."""

        def __init__(self, real):
            self.real, self.calls, self.full = real, 0, True

        def store(self, *args):
            self.calls += 1
            if self.full and self.calls > 2:
                raise DiskFull("the archive disk is full (simulated)")
            return self.real.store(*args)

    ingestor = FillsUp(app.ingestor)
    inbox = Inbox(InboxSettings(data_dir / "inbox", stable_seconds=0, retry_seconds=3600), ingestor, app.audit,
                  app.failed_imports.quarantine)
    inbox.scan()
    inbox.scan()
    assert (data_dir / "inbox" / "study.zip").exists()  # kept: not failed, not deleted
    assert not app.failed_imports.list()
    assert counts() == (2, 2)
    ingestor.full = False
    inbox._hold_until = 0  # the retry time has come
    inbox.scan()
    inbox.scan()
    assert not (data_dir / "inbox" / "study.zip").exists()
    assert counts() == (5, 5)
