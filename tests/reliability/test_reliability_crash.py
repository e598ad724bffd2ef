"""Crash consistency: SIGKILL the server at random moments during concurrent C-STORE, STOW-RS and inbox import.

Each round starts a real `pacs-appliance serve`, runs three writers at once (a
storescu batch, a STOW-RS loop posting one instance per request, files renamed
into <data>/inbox), kills the process with SIGKILL after a random delay
(seeded, so a failure can be replayed), and then checks with the server down:

- every instance acknowledged to its sender (storescu 0x0000 response, STOW-RS
  200 ReferencedSOPSequence, inbox file removed) is in the index and its
  archive object decrypts to the bytes sent (dataset identical);
- no index row names a missing object.

The next round's start-up must clean archive/tmp and move orphans aside, so
after it the archive holds exactly the objects the index names. ROUNDS rounds
in a row on the same data directory; the figures go in bench/README.md.
"""
from __future__ import annotations

import io
import os
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pydicom
import requests

import synth
from helpers import ADMIN_PASSWORD, Server, dataset_bytes, failed_imports, storescu_acknowledged, wait_until

ROUNDS = int(os.environ.get("PACS_CRASH_ROUNDS", "4"))  # more for a long soak: PACS_CRASH_ROUNDS=20
SEED = int(os.environ.get("PACS_CRASH_SEED", "20261123"))
PER_ROUND = {"dimse": 150, "stow": 80, "inbox": 50}
FAST_INBOX = {"PACS_INBOX_STABLE_SECONDS": "0.2", "PACS_INBOX_POLL_SECONDS": "0.5"}
DCM = 'multipart/related; type="application/dicom"'


def part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_sources(round_no: int) -> dict[str, dict[str, bytes]]:
    """kind -> {SOP Instance UID: Part 10 bytes}, one fresh study per kind and round."""
    out = {}
    for kind, n in PER_ROUND.items():
        study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        files = {}
        for i in range(n):
            ds = synth.make_instance("CT" if i % 2 else "MR", patient_id=f"CRASH{round_no}", study_uid=study,
                                     series_uid=series, instance_number=i)
            if 0xFFFCFFFC in ds:
                del ds[0xFFFCFFFC]  # dcmtk drops trailing padding when it sends
            files[str(ds.SOPInstanceUID)] = part10(ds)
        out[kind] = files
    return out


def stow_loop(url: str, files: dict[str, bytes], acked: set[str], stop: threading.Event) -> None:
    """Post one instance per request until the server dies; record the UIDs a 200 response lists."""
    s = requests.Session()
    s.auth = ("admin", ADMIN_PASSWORD)
    for uid, data in files.items():
        if stop.is_set():
            return
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
                + f"\r\n--{boundary}--\r\n".encode())
        try:
            r = s.post(f"{url}/dicomweb/studies", data=body, timeout=10,
                       headers={"Content-Type": f'{DCM}; boundary="{boundary}"', "Accept": "application/dicom+json"})
        except requests.RequestException:
            return  # the server was killed mid-request: not acknowledged
        if r.status_code == 200:
            for item in r.json()["00081199"]["Value"]:
                acked.add(item["00081155"]["Value"][0])


def drop_into_inbox(inbox: Path, staging: Path, files: dict[str, bytes], stop: threading.Event) -> dict[str, Path]:
    """Rename files into the inbox one by one (atomic, as a careful share client would)."""
    placed = {}
    for uid, data in files.items():
        if stop.is_set():
            break
        tmp = staging / f"{uid}.dcm"
        tmp.write_bytes(data)
        target = inbox / f"{uid}.dcm"
        os.rename(tmp, target)
        placed[uid] = target
        time.sleep(0.03)
    return placed


def read_back(data_dir: Path) -> tuple[dict[str, bytes], set[str], set[str]]:
    """(SOP UID -> stored bytes, object ids the index names, object ids in the archive)."""
    from appliance.archive import Archive, KeyStore
    from appliance.config import load
    from appliance.index import Index
    from indexkit import instances, rows as index_rows

    cfg = load(data_dir, env={})
    keyring = KeyStore(cfg.keys_dir).load()
    index = Index.open(cfg.index_path, keyring.index_key, url=cfg.index.url)  # a PostgreSQL index: its URL
    try:
        archive = Archive(cfg.archive_dir, keyring)
        rows = instances(index)
        named = set(rows.values()) | {r.object_id for r in index_rows(index, "ReplacedObject")}
        stored = {uid: archive.read(oid) for uid, oid in rows.items()}
        return stored, named, set(archive.list_ids())
    finally:
        index.close()


def test_sigkill_during_concurrent_stores(data_dir, tmp_path):
    rng = random.Random(SEED)
    inbox, staging = data_dir / "inbox", tmp_path / "staging"
    inbox.mkdir(exist_ok=True)
    staging.mkdir()
    all_acked: dict[str, bytes] = {}  # every UID ever acknowledged -> the bytes sent
    cycles = []
    for round_no in range(ROUNDS):
        sources = make_sources(round_no)
        src_dir = tmp_path / f"src{round_no}"
        src_dir.mkdir()
        for uid, data in sources["dimse"].items():
            (src_dir / f"{uid}.dcm").write_bytes(data)

        srv = Server(data_dir, env=FAST_INBOX).start()
        if round_no:  # start-up after a SIGKILL: tmp cleaned, orphans moved aside, index and archive agree
            assert not any((data_dir / "archive" / "tmp").iterdir()), "archive/tmp kept unfinished writes"
        stop = threading.Event()
        stow_acked: set[str] = set()
        placed: dict[str, Path] = {}
        log_path = tmp_path / f"storescu{round_no}.log"
        with open(log_path, "w") as log:
            sender = subprocess.Popen(["storescu", "-d", "-aec", "PACSBOX", "127.0.0.1", str(srv.dicom_port),
                                       *sorted(map(str, src_dir.iterdir()))], stdout=log, stderr=subprocess.STDOUT)
            stow = threading.Thread(target=stow_loop, args=(srv.url, sources["stow"], stow_acked, stop))
            dropper = threading.Thread(
                target=lambda: placed.update(drop_into_inbox(inbox, staging, sources["inbox"], stop)))
            stow.start()
            dropper.start()
            delay = rng.uniform(0.5, 2.0)
            time.sleep(delay)
            srv.proc.kill()  # SIGKILL: nothing shuts down cleanly
            srv.proc.wait(10)
            stop.set()
            try:
                sender.wait(30)
            finally:
                sender.kill()
            stow.join(30)
            dropper.join(30)

        dimse_acked = storescu_acknowledged(log_path.read_text())
        inbox_acked = {uid for uid, path in placed.items() if not path.exists()}
        failed = {name: reason for name, (reason, _) in failed_imports(srv.data_dir).items()}
        assert not failed, f"inbox files failed: {failed}"
        for kind, acked in (("dimse", dimse_acked), ("stow", stow_acked), ("inbox", inbox_acked)):
            all_acked.update({uid: sources[kind][uid] for uid in acked})
        cycles.append((round(delay, 2), len(dimse_acked), len(stow_acked), len(inbox_acked)))

        stored, named, present = read_back(data_dir)
        lost = set(all_acked) - set(stored)
        assert not lost, f"round {round_no}: {len(lost)} acknowledged instance(s) lost"
        for uid, sent in all_acked.items():
            assert dataset_bytes(stored[uid]) == dataset_bytes(sent), f"round {round_no}: {uid} differs"
        assert named <= present, f"round {round_no}: index rows without objects: {named - present}"

    # A last clean start: reconciliation leaves the archive holding exactly what the index names,
    # and whatever was still in the inbox is imported.
    srv = Server(data_dir, env=FAST_INBOX).start()
    try:
        wait_until(lambda: not any(p.suffix == ".dcm" for p in inbox.iterdir()), 30, what="the inbox to drain")
        assert not any((data_dir / "archive" / "tmp").iterdir())
    finally:
        srv.stop()
    stored, named, present = read_back(data_dir)
    assert named == present, f"orphans {present - named}, missing {named - present}"
    assert set(all_acked) <= set(stored)
    for uid, sent in all_acked.items():
        assert dataset_bytes(stored[uid]) == dataset_bytes(sent)
    # The kills must have landed mid-run at least once for every kind, or the test proves little.
    assert sum(c[1] for c in cycles) > 0 and sum(c[2] for c in cycles) > 0 and sum(c[3] for c in cycles) > 0
    print(f"crash cycles (delay s, dimse acked, stow acked, inbox acked): {cycles}; "
          f"{len(all_acked)} acknowledged instances all intact")
