"""``[dicom] ingest_workers``: storage associations served by worker processes (appliance/dicom/workers.py).

The appliance runs in this process (``build`` + ``start``) so that a test can see which connections
went to a worker, and hold the parent's commit of a worker's sealed object while it kills that worker.
A lone storage association is served in-process (workers.py, step 1), so the tests that want workers
first hold one association open (``one_held_open``): every storage association after it goes to a worker.
The last test runs a real ``serve`` process and kills it: its workers must end with it.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

import readback
import synth
from appliance.app import build
from appliance.config import load
from appliance.dicom import workers as workers_mod
from helpers import Server, dcmtk, free_port, storescu_acknowledged, wait_until

WORKERS = 2


@contextmanager
def running(data_dir: Path, **env: str):
    settings = {"PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(free_port()),
                "PACS_DICOM_INGEST_WORKERS": str(WORKERS), "PACS_STORAGE_RESERVE_MB": "16",
                "PACS_INBOX_ENABLED": "false", "PACS_INTEGRITY_SAMPLE_SIZE": "0", **env}
    app = build(load(data_dir, env={**os.environ, **settings}), with_web=False)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def port(app) -> str:
    return str(app.node.bound_address[1])


@contextmanager
def one_held_open(app, calling: str = "HOLDER"):
    """An established storage association, idle until the block ends: served in-process, since it came alone."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", int(port(app)), ae_title="PACSBOX")
    assert assoc.is_established
    try:
        assert app.node.workers.served_here() == 1
        yield assoc
    finally:
        assoc.release()
        ae.shutdown()


def found_uids(app, tmp_path: Path, name: str) -> set[str]:
    out = tmp_path / name
    out.mkdir()
    found = dcmtk("findscu", "-S", "-X", "-od", out, "-aec", "PACSBOX", "-k", "QueryRetrieveLevel=IMAGE",
                  "-k", "StudyInstanceUID", "-k", "SOPInstanceUID", "127.0.0.1", port(app))
    assert found.returncode == 0, found.stderr
    return {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.glob("rsp*.dcm")}


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def without_padding(data: bytes):
    ds = pydicom.dcmread(io.BytesIO(data))
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]  # dcmtk drops trailing padding when it sends
    return ds


def mixed_set(directory: Path, tag: str) -> list[Path]:
    return (synth.write_study(directory, 2, 3, kind="CT", patient_id=f"{tag}CT")
            + synth.write_study(directory, 1, 3, kind="MR", patient_id=f"{tag}MR")
            + synth.write_study(directory, 1, 2, kind="US", patient_id=f"{tag}US"))


def test_storage_in_workers_then_find_and_get_see_everything(data_dir, tmp_path):
    files = mixed_set(tmp_path / "src", "WK1")
    with running(data_dir) as app, one_held_open(app):
        workers = app.node.workers
        assert workers.ready_count() == WORKERS
        for pid in workers.pids():  # what workers.WORKER_NEVER_IMPORTS keeps out of their memory
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "/numpy/" not in maps and "/psycopg" not in maps and "/PIL/" not in maps
            assert "sqlcipher" not in maps and "_sqlite3" not in maps
        assert workers.index_modules() == {pid: [] for pid in workers.pids()}  # no peewee, SQLCipher, appliance.index
        stored = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port(app), *files)
        assert stored.returncode == 0, stored.stderr
        assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", port(app)).returncode == 0
        assert workers.handed_off == 2  # the storage association and the verification one

        assert found_uids(app, tmp_path, "find") == {uid_of(f) for f in files}
        assert workers.handed_off == 2  # C-FIND stays in the parent

        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        out = tmp_path / "get"
        out.mkdir()
        got = dcmtk("getscu", "-S", "-aec", "PACSBOX", "-od", out, "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={study}", "127.0.0.1", port(app))
        assert got.returncode == 0, got.stderr
        in_study = {uid_of(f) for f in files
                    if str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) == study}
        assert {uid_of(p) for p in out.iterdir()} == in_study
        assert workers.handed_off == 2  # C-GET stays in the parent
        wait_until(lambda: app.node.slots.elsewhere == 0, 30, what="the worker associations' slots to be freed")
    stored = readback.stored(data_dir)
    for f in files:
        assert without_padding(stored[uid_of(f)]) == without_padding(f.read_bytes())


def test_four_parallel_senders(data_dir, tmp_path):
    groups = [synth.write_study(tmp_path / f"src{i}", 2, 5, kind="CT", patient_id=f"PAR{i}") for i in range(4)]
    with running(data_dir) as app, one_held_open(app):
        senders = [subprocess.Popen(["storescu", "-aec", "PACSBOX", "127.0.0.1", port(app), *map(str, g)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for g in groups]
        outputs = [s.communicate(timeout=120)[0] for s in senders]
        assert [s.returncode for s in senders] == [0] * 4, outputs
        assert app.node.workers.handed_off == 4
        assert found_uids(app, tmp_path, "find") == {uid_of(f) for g in groups for f in g}


def test_refused_caller_and_refused_store_answered_as_before(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "src", 1, 2, kind="CT", patient_id="POLICY1")
    with running(data_dir, PACS_DICOM_ALLOWED_CALLERS="GOODSCU") as app, one_held_open(app, "GOODSCU"):
        refused = dcmtk("storescu", "-aet", "BADSCU", "-aec", "PACSBOX", "127.0.0.1", port(app), *files)
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stderr + refused.stdout
        assert app.node.workers.handed_off == 0  # the parent rejects it itself
        ok = dcmtk("storescu", "-aet", "GOODSCU", "-aec", "PACSBOX", "127.0.0.1", port(app), *files)
        assert ok.returncode == 0, ok.stderr
        assert app.node.workers.handed_off == 1


def test_worker_killed_between_its_fsync_and_the_commit(data_dir, tmp_path, monkeypatch):
    """The parent holds the first record request of a worker (the object is sealed and fsynced there), the
    test kills that worker with SIGKILL, then lets the commit go on: its sender sees a failure for that
    instance, everything acknowledged is indexed and readable, and a new worker takes over."""
    src = tmp_path / "src"
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    files = []
    for i in range(20):
        ds = synth.make_instance("CT", patient_id="WKILL", study_uid=study, series_uid=series, instance_number=i)
        del ds[0xFFFCFFFC]  # dcmtk drops trailing padding when it sends; keep the files byte-comparable
        src.mkdir(exist_ok=True)
        path = src / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    arrived, release = threading.Event(), threading.Event()
    held: dict = {}
    record = workers_mod.IngestWorkers._record

    def held_record(self, worker, sealed, origin):
        if not held:
            held.update(worker=worker, sop_uid=sealed.attributes.sop_uid)
            arrived.set()
            release.wait(60)
        return record(self, worker, sealed, origin)

    monkeypatch.setattr(workers_mod.IngestWorkers, "_record", held_record)
    log_path = tmp_path / "storescu.log"
    with running(data_dir) as app, one_held_open(app):
        with open(log_path, "w") as log:
            sender = subprocess.Popen(["storescu", "-d", "-aec", "PACSBOX", "127.0.0.1", port(app),
                                       *map(str, files)], stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(arrived.is_set, 60, what="a worker's first record request")
                victim = held["worker"]
                assert {"calling_ae": "STORESCU", "address": "127.0.0.1"} in app.node.active_associations()
                os.kill(victim.proc.pid, signal.SIGKILL)
                wait_until(lambda: victim.gone, 30, what="the parent to see the worker end")
                release.set()
                assert sender.wait(60) != 0  # storescu saw its association cut off
            finally:
                release.set()
                sender.kill()
        acked = storescu_acknowledged(log_path.read_text())
        assert held["sop_uid"] not in acked
        assert len(acked) < len(files)
        wait_until(lambda: app.node.slots.elsewhere == 0, 30, what="the dead worker's slot to be freed")
        wait_until(lambda: app.node.workers.ready_count() == WORKERS, 60, what="a new worker")

        again = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port(app), *files)  # the sender retries
        assert again.returncode == 0, again.stderr
        assert found_uids(app, tmp_path, "find") >= {uid_of(f) for f in files}
    stored = readback.stored(data_dir)
    for f in files:
        assert readback.dataset_bytes(stored[uid_of(f)]) == readback.dataset_bytes(f.read_bytes())
    with readback.opened(data_dir) as (archive, _index):
        assert set(readback.index_object_ids(data_dir).values()) <= set(archive.list_ids())


def test_a_lone_sender_is_served_in_process_the_second_concurrent_one_by_a_worker(data_dir, tmp_path):
    first, second, third = (synth.write_study(tmp_path / f"src{i}", 1, 3, kind="CT", patient_id=f"HYB{i}")
                            for i in range(3))
    with running(data_dir) as app:
        workers = app.node.workers
        with one_held_open(app) as held:  # alone: in-process
            assert workers.handed_off == 0
            assert held.send_c_store(pydicom.dcmread(first[0])).Status == 0
            assert workers.handed_off == 0
            stored = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port(app), *second)  # while it is served
            assert stored.returncode == 0, stored.stderr
            assert workers.handed_off == 1
        wait_until(lambda: workers.served_here() == 0, 30, what="the held association to end in the node")
        wait_until(lambda: app.node.slots.elsewhere == 0, 30, what="the worker association's slot to be freed")
        stored = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port(app), *third)  # alone again
        assert stored.returncode == 0, stored.stderr
        assert workers.handed_off == 1
        assert found_uids(app, tmp_path, "find") == {uid_of(f) for f in [first[0], *second, *third]}


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids.update(int(c) for c in task.read_text().split())
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("while_storing", [False, True])
def test_workers_end_with_a_killed_parent(data_dir, tmp_path, while_storing):
    srv = Server(data_dir, env={"PACS_DICOM_INGEST_WORKERS": str(WORKERS)}).start()
    sender = None
    try:
        workers = wait_until(lambda: len(_children(srv.proc.pid)) == WORKERS and _children(srv.proc.pid),
                             30, what="the ingest workers")
        for pid in workers:
            assert "appliance.dicom.workers" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        if while_storing:
            files = synth.write_study(tmp_path / "src", 1, 60, kind="CT", patient_id="PKILL")
            log_path = tmp_path / "storescu.log"
            sender = subprocess.Popen(["storescu", "-d", "-aec", "PACSBOX", "127.0.0.1", str(srv.dicom_port),
                                       *map(str, files)], stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
            wait_until(lambda: "0x0000" in log_path.read_text(), 60, interval=0.005, what="a first acknowledgement")
        srv.proc.kill()
        srv.proc.wait(10)
        wait_until(lambda: not any(_alive(pid) for pid in workers), 30, what="the workers to end")
    finally:
        if sender is not None:
            sender.kill()
        srv.kill()


def test_a_worker_refuses_to_store_for_a_calling_ae_it_was_never_told_about(caplog):
    """The parent hands each connection over with its calling AE's store permission; a C-STORE in a worker
    for any other AE is refused (fail closed), with a log line that says why."""
    permissions = workers_mod._HandedOffPermissions()
    permissions.can_store.update({"ALLOWED": True, "DENIED": False})
    assert permissions.permits("ALLOWED ", "can_store")
    assert not permissions.permits("DENIED", "can_store")
    assert not permissions.permits("ALLOWED", "can_move")
    with caplog.at_level("ERROR", logger=workers_mod.__name__):
        assert not permissions.permits("STRANGER", "can_store")
    assert "no store permission was handed over for calling AE 'STRANGER'" in caplog.text


def test_a_record_request_crosses_the_channel_as_plain_values_and_comes_back_equal(tmp_path):
    """What a worker sends per instance (``pack_sealed``) is a flat tuple of plain values that unpacks to
    equal ``Sealed`` and ``Origin`` objects in the parent (extra attributes included)."""
    import pickle

    from appliance.archive import StoredObject
    from appliance.ingest import Origin, Sealed
    from appliance.ingest.dicomfile import parse

    path = synth.write_study(tmp_path / "src", 1, 1, kind="CT", patient_id="PACK1")[0]
    data = path.read_bytes()
    sealed = Sealed(parse(io.BytesIO(data), len(data)).attributes, StoredObject("ab" * 16, len(data), "cd" * 32))
    origin = Origin("dicom", "STORESCU@127.0.0.1")
    message = workers_mod.pack_sealed(sealed, origin)
    assert all(isinstance(v, (str, int, type(None), tuple)) for v in message)
    assert workers_mod.unpack_sealed(pickle.loads(pickle.dumps(message))) == (sealed, origin)


def test_a_request_with_role_selection_is_negotiated_by_the_node(data_dir):
    """Storage contexts with SCP/SCU role selection (as a C-GET requestor proposes them) are negotiated by
    the node's rules even when only storage is proposed: a syntax the box can always send, not the
    requestor's first, so such a request is never handed to a worker."""
    from pynetdicom import build_context, build_role
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

    with running(data_dir) as app, one_held_open(app):
        mr = "1.2.840.10008.5.1.4.1.1.4"
        ae = AE(ae_title="ROLES")
        assoc = ae.associate("127.0.0.1", int(port(app)), ae_title="PACSBOX",
                             contexts=[build_context(mr, [JPEGLosslessSV1, ExplicitVRLittleEndian])],
                             ext_neg=[build_role(mr, scp_role=True)])
        try:
            assert assoc.is_established
            assert [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts] == [ExplicitVRLittleEndian]
        finally:
            assoc.release()
            ae.shutdown()
        assert app.node.workers.handed_off == 0
