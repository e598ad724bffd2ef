"""Issue 15: the index is never a single point of failure.

A box with objects, users, peers and worklist entries loses (or damages) its index:
``serve`` refuses and says what to run, ``pacs-appliance index rebuild`` brings all of
it back from the archive and the sealed index snapshot kept in it (even objects newer
than the snapshot), resumes after kill -9, and the result answers queries exactly as
before. Objects are small synthetic SR documents stored in-process through the Ingestor
(fsync switched off while filling: what is tested is the rebuild, not the fill's durability).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from appliance import config as config_mod
from appliance.records.accounts import create_user, list_users
from appliance.app import Parts
from appliance.records.audit import AuditLog
from appliance.events import Events
from appliance.ingest import Ingestor, Origin
from appliance.records.peers import PeerRegistry
from appliance.index.reconcile import TooManyOrphans, reconcile
from appliance.services.snapshots import IndexSnapshots
from appliance.records.worklist import Worklist
import synth
from helpers import CLI, Server, init_data_dir, run_cli

# The embedded index's file, snapshots and rebuild: a PostgreSQL index has none of them (its server keeps it;
# what a wrong or old database does at start is tests/reliability/test_postgres_index.py).
pytestmark = pytest.mark.sqlcipher
GET_AE = "GETSCU"
BIG = int(os.environ.get("REBUILD_TEST_OBJECTS", "5000"))  # enough to kill the rebuild mid-way; the scale is bench/rebuild_bench.py's


def fill(ingestor: Ingestor, n: int, *, first_patient: int = 0, per_study: int = 50) -> list:
    results = []
    for s in range(n // per_study):
        study, series = generate_uid(), generate_uid()
        for i in range(per_study):
            data = synth.tiny_sr(first_patient + s, study, series, i + 1)
            results.append(ingestor.store_bytes(data, Origin("import")))
    return results


class Box:
    """One data directory opened in-process (the writer not started: writes commit inline)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.config = config_mod.load(data_dir)
        self.parts = Parts(self.config)
        self.index = self.parts.index
        self.archive = self.parts.archive
        self.ingestor = Ingestor(self.archive, self.index, Events(), reserve_bytes=0)

    def close(self):
        self.parts.close()

    def snapshot(self):
        c = self.config
        return IndexSnapshots(self.index, self.parts.keyring.index_key, self.archive, c.data_dir,
                              c.index.snapshot_keep, c.index.snapshot_hours).take()

    def dump(self) -> dict:
        """What C-FIND answers at every level (the index's query engine), and which bytes each instance names."""
        out = {}
        for level in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
            rows = self.index.search(level, {})
            # row ids follow the replay order, which within one tick of the file clock is by object id
            out[level] = sorted(repr(sorted((k, v) for k, v in r.items() if k not in ("id", "_id", "created_at",
                                                                                      "updated_at", "received_at")))
                                for r in rows)
        # What C-GET/C-MOVE/WADO send: each instance's (and replaced version's) archive object and its digest.
        out["objects"] = sorted((r.label, r.object_id, r.sha256, r.size) for r in self.index.objects.rows())
        return out

    def not_in_images(self) -> dict:
        return {
            "users": sorted(u.username for u in list_users(self.index.accounts)),
            "peers": sorted(p.ae_title for p in PeerRegistry(self.index).list()),
            "worklist": sorted(w.patient_id for w in Worklist(self.index).list()),
        }


@pytest.fixture
def fast_fill(monkeypatch):
    """fsync off while the test writes its objects (restored for the code under test)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    yield
    monkeypatch.undo()


def _state(data_dir: Path, n: int, *, after_snapshot: int) -> tuple[dict, dict, dict]:
    """Fill a box with ``n`` objects, users, peers and worklist entries; take a snapshot; store
    ``after_snapshot`` more objects after it (and one replacing an older version)."""
    box = Box(data_dir)
    try:
        box.index.db.execute_sql("PRAGMA synchronous = OFF")
        stored = fill(box.ingestor, n)
        create_user(box.index.accounts, "radiologist", "a long enough password 1", "clinician")
        PeerRegistry(box.index).add("CT1", "10.0.0.5", 104)
        PeerRegistry(box.index).add(GET_AE, "127.0.0.1", 104)
        Worklist(box.index).add(patient_name="WL^ONE", patient_id="WL001", scheduled_date="20260102", modality="CT")
        AuditLog(box.index).record("test.before", "tester")
        box.snapshot()
        fill(box.ingestor, after_snapshot, first_patient=90_000)
        old = stored[0]  # a new version of an instance the snapshot names
        corrected = synth.tiny_sr(0, old.study_uid, old.series_uid, 1, sop_uid=old.sop_uid, text="corrected")
        box.ingestor.store_bytes(corrected, Origin("import"))
        return box.dump(), box.not_in_images(), {"replaced": box.index.objects.count(), "study": old.study_uid}
    finally:
        box.close()


def _c_get(data_dir: Path, study_uid: str, out: Path) -> dict[str, bytes]:
    """A real C-GET of one study (dcmtk getscu against a running appliance): SOP Instance UID -> bytes."""
    out.mkdir()
    server = Server(data_dir).start()
    try:
        got = subprocess.run(["getscu", "-S", "+B", "-aet", GET_AE, "-aec", "PACSBOX", "-od", str(out),
                              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1",
                              str(server.dicom_port)], capture_output=True, text=True, timeout=120, cwd=out)
        assert got.returncode == 0, got.stderr
    finally:
        server.stop()
    return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f.read_bytes() for f in out.iterdir()}


def _lose_index(data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"index.db{suffix}").unlink(missing_ok=True)


def _serve_refuses(data_dir: Path) -> str:
    proc = subprocess.run(CLI + ["serve", "--data", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "index rebuild" in proc.stderr
    return proc.stderr


def _after(data_dir: Path) -> tuple[dict, dict, int, list]:
    box = Box(data_dir)
    try:
        audit = AuditLog(box.index)
        assert audit.verify().ok
        actions = [e.action for e in audit.query(limit=None, newest_first=False)]
        return box.dump(), box.not_in_images(), box.index.objects.count(), actions
    finally:
        box.close()


def test_lost_index_is_rebuilt_after_kill_9_and_answers_as_before(tmp_path, fast_fill):
    data_dir = init_data_dir(tmp_path / "data")
    # Half the objects arrive after the newest snapshot: they come back too.
    dump, kept, counts = _state(data_dir, BIG // 2, after_snapshot=BIG // 2)
    before = _c_get(data_dir, counts["study"], tmp_path / "get-before")  # the study with a replaced instance
    assert len(before) == 50
    shelf = sorted((data_dir / "archive" / "snapshots").iterdir())
    for newer in shelf[1:]:  # the one serve took at start: keep only the snapshot older than half the objects
        newer.unlink()
    _lose_index(data_dir)

    assert "missing" in _serve_refuses(data_dir)
    assert "index.db" not in os.listdir(data_dir)  # refusing created nothing

    env = dict(os.environ)
    proc = subprocess.Popen(CLI + ["index", "rebuild", "--data", str(data_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env=env)
    work = data_dir / "index.db.rebuild-wal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (work.exists() and work.stat().st_size > 1 << 20):
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)  # the rebuild and its workers, mid-way
    proc.wait()
    assert not (data_dir / "index.db").exists()

    done = run_cli("index", "rebuild", "--data", data_dir)
    assert "(resumed)" in done.stdout, done.stdout

    after_dump, after_kept, after_counts, actions = _after(data_dir)
    assert after_dump == dump
    assert after_kept == kept
    assert after_counts == counts["replaced"]  # every instance and the replaced version
    assert "test.before" in actions and actions[-1] == "index.rebuild"
    assert _c_get(data_dir, counts["study"], tmp_path / "get-after") == before
    run_cli("verify", "--data", data_dir, "--sample", "20")


def _flip_page(path: Path, fraction: float) -> None:
    """Overwrite bytes inside one page of the (closed) index file, as a disk error would."""
    size = path.stat().st_size
    page = 4096
    offset = (int(size * fraction) // page) * page + 200
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(64)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_damaged_index_pages_are_found_at_start_and_by_verify_then_rebuilt(tmp_path, fast_fill):
    data_dir = init_data_dir(tmp_path / "data")
    dump, kept, counts = _state(data_dir, 300, after_snapshot=100)
    index_db = data_dir / "index.db"
    assert not (data_dir / "index.db-wal").exists() or (data_dir / "index.db-wal").stat().st_size == 0
    _flip_page(index_db, 0.6)

    checked = run_cli("verify", "--data", data_dir, check=False)
    assert checked.returncode == 4, checked.stdout + checked.stderr
    assert "the index file is DAMAGED" in checked.stdout
    assert "index rebuild" in _serve_refuses(data_dir)

    done = run_cli("index", "rebuild", "--data", data_dir)
    assert "the old index was kept as" in done.stdout
    assert list(data_dir.glob("index.db.damaged-*"))
    after_dump, after_kept, after_counts, actions = _after(data_dir)
    assert (after_dump, after_kept, after_counts) == (dump, kept, counts["replaced"])
    assert actions[-1] == "index.rebuild"
    assert run_cli("index", "check", "--data", data_dir).stdout.strip().endswith("rows and archive agree")


def test_a_serve_with_auto_rebuild_rebuilds_on_its_own(tmp_path, fast_fill):
    from appliance.app import build

    data_dir = init_data_dir(tmp_path / "data")
    dump, kept, counts = _state(data_dir, 100, after_snapshot=20)
    _lose_index(data_dir)
    app = build(config_mod.load(data_dir, env={"PACS_INDEX_AUTO_REBUILD": "true"}), with_web=False)
    try:
        assert app.index.objects.count() == counts["replaced"]
    finally:
        app.index.close()
    after_dump, after_kept, _, actions = _after(data_dir)
    assert (after_dump, after_kept) == (dump, kept) and actions[-1] == "index.rebuild"


def test_a_mass_of_unindexed_objects_stops_start_up_and_moves_nothing(tmp_path, fast_fill):
    """An old index over a newer archive: reconciliation refuses rather than orphan every newer object."""
    data_dir = init_data_dir(tmp_path / "data")
    box = Box(data_dir)
    try:
        fill(box.ingestor, 10, per_study=10)
        old = data_dir / "old-index.db"
        from appliance.index import snapshot as index_snapshot

        index_snapshot.take(box.index.db, box.parts.keyring.index_key, old)
        fill(box.ingestor, 40, first_patient=100, per_study=20)
    finally:
        box.close()
    _lose_index(data_dir)
    os.rename(old, data_dir / "index.db")  # the index as it was 40 objects ago
    box = Box(data_dir)
    try:
        with pytest.raises(TooManyOrphans, match="40 of 50 archive objects have no index row"):
            reconcile(box.archive, box.index)
        assert len(list(box.archive.list_ids())) == 50  # nothing moved to orphans
    finally:
        box.close()


def test_snapshots_keep_a_few_generations_and_a_damaged_one_is_passed_over(tmp_path, fast_fill):
    data_dir = init_data_dir(tmp_path / "data")
    box = Box(data_dir)
    try:
        fill(box.ingestor, 20, per_study=10)
        create_user(box.index.accounts, "early", "a long enough password 1", "clinician")
        older = box.snapshot()
        create_user(box.index.accounts, "late", "a long enough password 1", "clinician")
        for _ in range(3):
            newest = box.snapshot()
        shelf = box.archive.snapshots
        assert [s.name for s in shelf.list()][0] == newest.name and len(shelf.list()) == 3  # snapshot_keep
        assert older.name not in [s.name for s in shelf.list()]
        dump = box.dump()
    finally:
        box.close()
    newest_file = data_dir / "archive" / "snapshots" / newest.name
    raw = bytearray(newest_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    newest_file.write_bytes(bytes(raw))  # sealed: any changed bit fails its tag
    _lose_index(data_dir)
    done = run_cli("index", "rebuild", "--data", data_dir)
    assert newest.name not in done.stdout and "from snapshot" in done.stdout
    after_dump, after_kept, _, _ = _after(data_dir)
    assert after_dump == dump and "late" in after_kept["users"]


def test_an_index_is_snapshotted_before_a_migration(tmp_path, monkeypatch):
    import shutil

    from appliance.index import db as index_db

    data_dir = init_data_dir(tmp_path / "data")
    migrations = tmp_path / "migrations"
    shutil.copytree(index_db.MIGRATIONS_DIR, migrations)
    (migrations / "0099_noop.py").write_text("def up(migrator, db):\n    pass\n")
    box = Box(data_dir)
    try:
        assert box.archive.snapshots.list() == []  # opening an up-to-date index takes none
    finally:
        box.close()
    monkeypatch.setattr(index_db, "MIGRATIONS_DIR", migrations)
    box = Box(data_dir)
    try:
        assert len(box.archive.snapshots.list()) == 1
    finally:
        box.close()


def test_a_rebuild_over_a_sound_index_keeps_what_was_made_since_the_last_snapshot(tmp_path, fast_fill):
    data_dir = init_data_dir(tmp_path / "data")
    dump, kept, counts = _state(data_dir, 50, after_snapshot=10)
    box = Box(data_dir)
    try:
        create_user(box.index.accounts, "after.snapshot", "a long enough password 1", "clinician")
    finally:
        box.close()
    run_cli("index", "rebuild", "--data", data_dir)
    after_dump, after_kept, _, _ = _after(data_dir)
    assert after_dump == dump and "after.snapshot" in after_kept["users"]
