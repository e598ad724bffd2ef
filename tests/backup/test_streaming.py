"""A backup run, verify and restore stream their object lists: read as consumed, a window ahead, never whole
(issue 19 item 4); the manifest is format 2 (id-ordered lines), and format 1 manifests still restore."""
from __future__ import annotations

import io
import json

import pytest
from backupkit import make_box

from appliance.backup import manifest as mf
from appliance.backup import sync as sync_mod
from appliance.backup.fetch import in_order
from appliance.backup.restore import restore
from appliance.backup.targets import FolderTarget
from appliance.backup.verify import verify


class Counted:
    """An iterator that counts what it has handed out."""

    def __init__(self, items):
        self._items, self.taken = iter(items), 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self._items)
        self.taken += 1
        return item


def test_in_order_reads_only_a_window_ahead():
    items = Counted(range(1000))
    results = in_order(lambda x: x * 2, items, parallel=2)
    assert next(results) == 0
    assert items.taken == 4  # parallel * 2 submitted, not the 1000 that Executor.map would take at once
    assert list(results) == [2 * x for x in range(1, 1000)]


@pytest.fixture
def box(tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    box = make_box(tmp_path, f"file://{nas}", parallel=1)
    box.nas = nas
    yield box
    box.app.index.close()


def test_a_run_uploads_while_it_still_reads_the_snapshot(box, monkeypatch, tmp_path):
    box.add_study(12, patient_id="STREAM1")
    streams = []
    wanted = sync_mod.snapshot.wanted
    monkeypatch.setattr(sync_mod.snapshot, "wanted", lambda *a: streams.append(Counted(wanted(*a))) or streams[-1])
    read_at_first_upload = []
    upload_one = sync_mod.Sync._upload_one

    def first_noted(self, oid, result):
        if not read_at_first_upload:
            read_at_first_upload.append(streams[0].taken)
        return upload_one(self, oid, result)

    monkeypatch.setattr(sync_mod.Sync, "_upload_one", first_noted)
    result = box.app.backup.run()
    assert result.result == "success" and result.objects == 12
    # parallel=1: at most two uploads under way, so the first began with at most those two ids read (of 12)
    assert read_at_first_upload[0] <= 2 and streams[0].taken == 12

    target = FolderTarget(box.nas)
    man = mf.latest_manifest(target, box.app.archive.keyring)
    listed = list(man.objects())
    assert man.count == 12 and [oid for oid, _ in listed] == sorted(box.object_ids())  # format 2: in id order
    report = restore(target, box.app.keys.recovery_key(), tmp_path / "restored")
    assert report.ok and report.restored == 12


def test_a_format_1_manifest_still_verifies_and_restores(box, tmp_path):
    box.add_study(3, patient_id="OLDFORMAT1")
    assert box.app.backup.run().result == "success"
    target, keyring = FolderTarget(box.nas), box.app.archive.keyring
    man = mf.latest_manifest(target, keyring)
    listed = list(man.objects())
    old = json.dumps({"format": "pacs-appliance-manifest", "version": 1, "created": man.created,
                      "snapshot": {"name": man.snapshot, "size": man.snapshot_size},
                      "keyring": {"name": mf.KEYRING_NAME, "size": man.keyring_size},
                      "objects": dict(listed)}, separators=(",", ":")).encode()
    sealed = io.BytesIO()
    mf.seal_blob(io.BytesIO(old), sealed, mf.MANIFEST_NAME.match(man.name).group(2), keyring)
    (box.nas / man.name).write_bytes(sealed.getvalue())  # as an earlier version wrote it

    again = mf.latest_manifest(target, keyring)
    assert again.name == man.name and again.count == 3 and list(again.objects()) == listed
    assert verify(target, keyring, full=True).decrypted == 3
    report = restore(target, box.app.keys.recovery_key(), tmp_path / "restored")
    assert report.ok and report.restored == 3
    assert box.app.backup.run().result == "success"  # and the next run, reading state, not manifests, goes on


def test_a_listing_out_of_name_order_is_refused_not_guessed():
    class Shuffled:
        url = "file:///shuffled"

        def list(self, prefix):
            yield from [("objects/bb/" + "b" * 32, 1), ("objects/aa/" + "a" * 32, 1)]

    with pytest.raises(ValueError, match="name order"):
        list(mf.object_listing(Shuffled()))
