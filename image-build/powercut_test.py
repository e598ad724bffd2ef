"""Power cuts during ingest on the real image under qemu (the slow suite runs it; README §8).

    python3 image-build/powercut_test.py [IMAGE.img] [--cycles 10] [--work DIR]

Each cycle: boot the disk; once ready, every instance acknowledged in earlier cycles
must be found (C-FIND, IMAGE level); four associations then send synthetic
instances as fast as the box takes them, and after a random 3-10 s the VM is
killed (SIGKILL to qemu: no shutdown, the guest's memory and caches are gone). With
the VM dead, a copy of the data partition is mounted on the host (ext4 replays its
journal as the next boot would) and checked: every instance any sender saw
acknowledged (C-STORE status 0x0000) is in the index and its archive object
decrypts to exactly the dataset bytes the C-STORE carried, and `pacs-appliance verify` finds
nothing damaged or missing. Prints a JSON report; exit 0 only if all cycles held.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

import smoke_test as st  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.dsutils import encode  # noqa: E402
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind  # noqa: E402

import synth  # noqa: E402
from helpers import dataset_bytes  # noqa: E402

SENDERS = 4


def sender(port: int, study_uid: str, acked: dict[str, bytes], stop: threading.Event, lock: threading.Lock) -> None:
    """One association sending CT instances until the box dies or `stop`; records what was acknowledged."""
    ae = AE(ae_title=f"CUT{threading.get_ident() % 1000:03d}")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # what the samples are: sent as they are
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=st.AE_TITLE)
    except Exception:  # noqa: BLE001
        return
    if not assoc.is_established:
        return
    try:
        n = 0
        while not stop.is_set():
            n += 1
            ds = synth.make_instance("CT", patient_id="POWERCUT", study_uid=study_uid, instance_number=n)
            data = encode(ds, False, True)  # the dataset bytes the C-STORE carries
            status = assoc.send_c_store(ds)
            if status and status.Status == 0x0000:
                with lock:
                    acked[str(ds.SOPInstanceUID)] = data
            if not assoc.is_established:
                return
    except Exception:  # noqa: BLE001 - the VM was killed mid-send: not acknowledged
        return
    finally:
        try:
            assoc.abort()
        except Exception:  # noqa: BLE001
            pass


def found_instances(port: int, study_uid: str) -> set[str]:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    found = set()
    for series_uid in _series(port, study_uid):
        query.SeriesInstanceUID = series_uid
        assoc = st.association(port, [StudyRootQueryRetrieveInformationModelFind])
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
                found.add(str(ident.SOPInstanceUID))
        assoc.release()
    return found


def _series(port: int, study_uid: str) -> list[str]:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    assoc = st.association(port, [StudyRootQueryRetrieveInformationModelFind])
    out = [str(ident.SeriesInstanceUID) for status, ident in
           assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
           if status and status.Status in (0xFF00, 0xFF01) and ident is not None]
    assoc.release()
    return out


def check_offline(disk: Path, work: Path, acked: dict[str, bytes]) -> dict:
    """Mount a copy of the data partition (journal replayed) and check it with the appliance's own code."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]["partitions"]
    data_part = next(p for p in table if p.get("name") == "pacs-data")
    copy, mnt = work / "data-copy.img", work / "mnt"
    subprocess.run(["dd", f"if={disk}", f"of={copy}", "bs=4M", "iflag=skip_bytes,count_bytes",
                    f"skip={data_part['start'] * 512}", f"count={data_part['size'] * 512}", "conv=sparse",
                    "status=none"], check=True)
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(copy), str(mnt)], check=True)
    try:
        mounted = subprocess.run(["findmnt", "-no", "FSTYPE,OPTIONS", str(mnt)], capture_output=True,
                                 text=True).stdout.strip()
        data_dir = mnt / "data"
        stored = read_back(data_dir)
        lost = sorted(set(acked) - set(stored))
        differ = sorted(uid for uid, sent in acked.items()
                        if uid in stored and dataset_bytes(stored[uid]) != sent)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        verify = subprocess.run([sys.executable, "-m", "appliance", "verify", "--data", str(data_dir)],
                                capture_output=True, text=True, env=env, timeout=900)
        return {"lost": lost, "differ": differ, "stored": len(stored), "verify_rc": verify.returncode,
                "verify": (verify.stdout + verify.stderr).strip().splitlines()[-3:], "mount": mounted}
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        copy.unlink(missing_ok=True)


def read_back(data_dir: Path) -> dict[str, bytes]:
    """SOP UID -> stored bytes, for every instance in the index (as tests/reliability does:
    through the index's query engine, tests/indexkit.py; the models are not bound globally)."""
    sys.path.insert(0, str(REPO))
    from appliance.archive import Archive, KeyStore
    from appliance.config import load
    from appliance.index import Index
    from indexkit import instances

    cfg = load(data_dir, env={})
    keyring = KeyStore(cfg.keys_dir).load()
    index = Index.open(cfg.index_path, keyring.index_key)
    try:
        archive = Archive(cfg.archive_dir, keyring)
        return {uid: archive.read(oid) for uid, oid in instances(index).items()}
    finally:
        index.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    image = args.image or max((HERE / "out").glob("*.img"), key=os.path.getmtime, default=None)
    if image is None:
        sys.exit("powercut-test: no image; build one with `sudo image-build/build`")
    work = args.work or Path(tempfile.mkdtemp(prefix="pacs-powercut-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    with open(disk, "r+b") as f:
        f.truncate(os.path.getsize(disk) + (2 << 30))
    subprocess.run(["sfdisk", "--relocate", "gpt-bak-std", str(disk)], check=True, capture_output=True)
    st.put_vendor_config(disk, st.VENDOR_TOML)
    results: dict = {"image": str(image), "seed": args.seed, "cycles": []}
    t0 = time.monotonic()
    acked: dict[str, bytes] = {}
    studies: list[str] = []
    accel = None
    box = None
    try:
        for cycle in range(args.cycles):
            box = st.Box(disk, work, f"cycle{cycle}", accel)
            accel = box.accel
            box.start()
            row = {"cycle": cycle, "ready_s": box.wait_ready(args.timeout)}
            missing = set(acked)
            for study in studies:
                missing -= found_instances(box.ports["dicom"], study)
            row["found_after_boot"] = len(acked) - len(missing)
            assert not missing, f"cycle {cycle}: {len(missing)} acknowledged instance(s) not found after boot"

            study = generate_uid()
            studies.append(study)
            stop, lock = threading.Event(), threading.Lock()
            new: dict[str, bytes] = {}
            threads = [threading.Thread(target=sender, args=(box.ports["dicom"], study, new, stop, lock))
                       for _ in range(SENDERS)]
            for t in threads:
                t.start()
            delay = rng.uniform(3, 10)
            time.sleep(delay)
            box.kill()  # the power cut
            stop.set()
            for t in threads:
                t.join(60)
            acked.update(new)
            row.update(cut_after_s=round(delay, 1), acked_this_cycle=len(new), acked_total=len(acked))
            check = check_offline(disk, work, acked)
            row.update(stored=check["stored"], lost=len(check["lost"]), differ=len(check["differ"]),
                       verify_rc=check["verify_rc"], verify=check["verify"])
            results["mount"] = check["mount"]
            results["cycles"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            assert not check["lost"], f"cycle {cycle}: acknowledged but lost: {check['lost'][:5]}"
            assert not check["differ"], f"cycle {cycle}: stored bytes differ: {check['differ'][:5]}"
            assert check["verify_rc"] == 0, f"cycle {cycle}: verify: {check['verify']}"
        assert sum(r["acked_this_cycle"] for r in results["cycles"]) > 0, "nothing was ever acknowledged"
        results["result"] = "PASS"
    except Exception as exc:  # noqa: BLE001
        results["result"] = f"FAIL: {type(exc).__name__}: {exc}"
    finally:
        if box is not None:
            box.kill()
    results["cycles_survived"] = sum(1 for r in results["cycles"] if not r["lost"] and not r["differ"]
                                     and r["verify_rc"] == 0)
    results["acked_total"] = len(acked)
    return st.report(results, t0, work, keep_work=args.work is not None)


if __name__ == "__main__":
    sys.exit(main())
