"""Index rebuild rate and the cost of an index snapshot (issue 15; figures in bench/README.md).

Builds (in a temporary directory) a data directory of ``--objects`` small synthetic
SR objects (tests/synth.py tiny_sr) stored in-process through the Ingestor, then:

1. the snapshot: time to take one (online backup + seal into the archive) and its
   sealed size, for that index;
2. the snapshot's effect on ingest: objects/s stored in-process (fsync on, one committed
   transaction each) for ``--ingest`` objects, alone and then while snapshots are taken
   back to back in another thread;
3. the rebuild from the archive alone (snapshots removed: every object decrypted,
   parsed and recorded), with ``pacs-appliance index rebuild``: objects/s and wall time;
4. the rebuild from the snapshot with ``--after`` objects newer than it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import PYTHON, ROOT  # noqa: F401 - common puts the repository on sys.path

sys.path.insert(0, str(ROOT / "tests"))
import synth  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from appliance import config as config_mod  # noqa: E402
from appliance.app import Parts  # noqa: E402
from appliance.events import Events  # noqa: E402
from appliance.ingest import Ingestor, Origin  # noqa: E402
from appliance.services.snapshots import IndexSnapshots  # noqa: E402


def fill(ingestor, n: int, first: int = 0, per_study: int = 50) -> None:
    for s in range(n // per_study):
        study, series = generate_uid(), generate_uid()
        for i in range(per_study):
            ingestor.store_bytes(synth.tiny_sr(first + s, study, series, i + 1), Origin("import"))


def rebuild(data_dir: Path) -> float:
    started = time.monotonic()
    subprocess.run([PYTHON, "-m", "appliance", "index", "rebuild", "--data", str(data_dir)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=20_000)
    ap.add_argument("--ingest", type=int, default=400)
    ap.add_argument("--after", type=int, default=2_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pacs-rebuild-bench-"))
    try:
        data_dir = tmp / "data"
        pw = tmp / "pw"
        pw.write_text("bench password 123")
        subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(data_dir), "--admin-password-file",
                        str(pw)], check=True, capture_output=True)
        parts = Parts(config_mod.load(data_dir))
        ingestor = Ingestor(parts.archive, parts.index, Events(), reserve_bytes=0)
        fsync = os.fsync
        os.fsync = lambda fd: None  # the fill only: its durability is not what is measured
        parts.index.db.execute_sql("PRAGMA synchronous = OFF")
        t0 = time.monotonic()
        fill(ingestor, args.objects)
        print(f"filled {args.objects} objects in {time.monotonic() - t0:.0f} s")
        os.fsync = fsync
        parts.index.db.execute_sql("PRAGMA synchronous = FULL")
        cfg = parts.config
        snaps = IndexSnapshots(parts.index, parts.keyring.index_key, parts.archive, data_dir, 3, 6)
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            snap = snaps.take()
            times.append(time.monotonic() - t0)
        index_size = cfg.index_path.stat().st_size
        print(f"snapshot: {min(times):.2f} s (best of 3; {', '.join(f'{t:.2f}' for t in times)}), sealed "
              f"{snap.size / 1e6:.1f} MB (index.db {index_size / 1e6:.1f} MB)")

        t0 = time.monotonic()
        fill(ingestor, args.ingest, first=50_000)
        alone = args.ingest / (time.monotonic() - t0)
        stop = threading.Event()
        taken = [0]

        def snapshots_meanwhile():
            while not stop.is_set():
                snaps.take()
                taken[0] += 1

        thread = threading.Thread(target=snapshots_meanwhile)
        thread.start()
        t0 = time.monotonic()
        fill(ingestor, args.ingest, first=60_000)
        during = args.ingest / (time.monotonic() - t0)
        stop.set()
        thread.join()
        print(f"ingest in-process: {alone:.0f} objects/s alone, {during:.0f} objects/s while {taken[0]} "
              f"snapshot(s) were taken back to back ({during / alone:.0%})")
        snaps.take()
        os.fsync = lambda fd: None
        fill(ingestor, args.after, first=70_000)
        os.fsync = fsync
        total = len(list(parts.archive.list_ids()))
        parts.close()

        for suffix in ("", "-wal", "-shm"):
            (data_dir / f"index.db{suffix}").unlink(missing_ok=True)
        seconds = rebuild(data_dir)
        print(f"rebuild from the newest snapshot + {args.after} newer objects ({total} in the archive): "
              f"{seconds:.1f} s")

        shutil.rmtree(data_dir / "archive" / "snapshots")
        for suffix in ("", "-wal", "-shm"):
            (data_dir / f"index.db{suffix}").unlink(missing_ok=True)
        seconds = rebuild(data_dir)
        print(f"rebuild from the archive alone: {total} objects in {seconds:.1f} s = {total / seconds:.0f} "
              f"objects/s (process start included); 100,000 objects at this rate: "
              f"{100_000 / (total / seconds) / 60:.1f} min")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
