"""Backup benchmark: full sync throughput (folder, SFTP) against plain rsync/sftp of the same bytes,
full restore throughput, and an incremental sync with nothing new on a 100,000-object archive.

    .venv/bin/python bench/backup_bench.py [--mb 2048] [--object-mb 2] [--objects 100000] [--work DIR]

Needs rsync and openssh-server/-client (apt-get install rsync openssh-server). Everything runs on
127.0.0.1 in a temporary directory (default under /var/tmp, a real disk: /tmp may be RAM).
Prints a Markdown table; the figures in bench/README.md come from it.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "backup"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import synth  # noqa: E402
from helpers import init_data_dir  # noqa: E402
from sshd import Sshd  # noqa: E402

from appliance import config as config_mod  # noqa: E402
from appliance.app import build  # noqa: E402
from appliance.archive import envelope  # noqa: E402
from appliance.backup.restore import restore  # noqa: E402
from appliance.backup.targets import FolderTarget, SftpTarget  # noqa: E402
from appliance.ingest import Origin  # noqa: E402


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn):
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def drop_caches() -> None:
    """Make reads come from the disk, as a nightly run's would (needs root; skipped otherwise)."""
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def make_box(work: Path, name: str, target: str, **settings):
    data = init_data_dir(work / name)
    env = {"PACS_BACKUP_TARGET": target, "PACS_STORAGE_RESERVE_MB": "16",
           **{f"PACS_BACKUP_{k.upper()}": str(v) for k, v in settings.items()}}
    return build(config_mod.load(data, env=env), with_web=False), data


def fill(app, total_mb: int, object_mb: int) -> int:
    """Ingest total_mb of CT instances of about object_mb each (random pixels: incompressible)."""
    side = int((object_mb * (1 << 20) / 2) ** 0.5)
    rng = np.random.default_rng(1)
    study = synth.generate_uid()
    n = max(1, total_mb // object_mb)
    for i in range(n):
        ds = synth.make_instance("CT", patient_id=f"BENCH{i // 100}", study_uid=study if i % 100 else None,
                                 instance_number=i + 1)
        study = ds.StudyInstanceUID
        ds.Rows = ds.Columns = side
        ds.PixelData = rng.integers(0, 4096, size=side * side, dtype=np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        app.ingestor.store_bytes(buf.getvalue(), Origin("import"))
    return n


def throughput(args, work: Path) -> list[tuple[str, str]]:
    rows = []
    nas = work / "nas"
    nas.mkdir()
    app, data = make_box(work, "box", f"file://{nas}", parallel=args.parallel)
    t, n = timed(lambda: fill(app, args.mb, args.object_mb))
    objects_dir = data / "archive" / "objects"
    size = dir_bytes(objects_dir)
    mb = size / 1e6
    rows.append(("corpus", f"{n} objects, {mb:.0f} MB sealed (ingested in {t:.0f} s)"))

    drop_caches()
    t, res = timed(app.backup.run)
    rows.append(("full sync to folder target (appliance, fsync per object)", f"{mb / t:.0f} MB/s ({t:.1f} s)"))
    for label, extra in (("rsync -a of the same objects (no fsync)", []),
                         ("rsync -a --fsync of the same objects", ["--fsync"])):
        dest = work / "rsync"
        drop_caches()
        t, _ = timed(lambda: subprocess.run(["rsync", "-a", *extra, f"{objects_dir}/", f"{dest}/"], check=True))
        rows.append((label, f"{mb / t:.0f} MB/s ({t:.1f} s)"))
        shutil.rmtree(dest)

    sshd = Sshd(work / "sshd").start()
    try:
        remote = work / "remote"
        app.backup.settings.values.update(target=sshd.url(remote), sftp_key_file=str(sshd.client_key),
                                          sftp_known_hosts=str(work / "known_hosts"))
        drop_caches()
        t, res = timed(lambda: app.backup.run())
        assert res.objects == n, res
        rows.append((f"full sync to SFTP target (appliance, paramiko, {args.parallel} channels)",
                     f"{mb / t:.0f} MB/s ({t:.1f} s)"))
        batch = work / "batch"
        plain = work / "plain-sftp"
        plain.mkdir()
        batch.write_text(f"put -r {objects_dir} {plain}\n")
        drop_caches()
        t, _ = timed(lambda: subprocess.run(
            ["sftp", "-q", "-i", str(sshd.client_key), "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-P", str(sshd.port), "-b", str(batch), f"{sshd.user}@127.0.0.1"],
            check=True, stdout=subprocess.DEVNULL))
        rows.append(("plain OpenSSH sftp put -r of the same objects", f"{mb / t:.0f} MB/s ({t:.1f} s)"))
        shutil.rmtree(plain)

        recovery = app.keys.recovery_key()
        app.index.close()
        for label, target in (("folder", FolderTarget(nas)),
                              ("SFTP", SftpTarget("127.0.0.1", sshd.port, sshd.user, str(remote), sshd.client_key,
                                                  work / "known_hosts"))):
            drop_caches()
            dest = work / f"restored-{label}"
            t, rep = timed(lambda: restore(target, recovery, dest, parallel=args.parallel))
            target.close()
            assert rep.ok and rep.restored == n, rep
            rows.append((f"full restore from {label} target (download, check every tag, rename)",
                         f"{mb / t:.0f} MB/s ({t:.1f} s)"))
            shutil.rmtree(dest)
    finally:
        sshd.kill()
    return rows


def incremental(args, work: Path) -> list[tuple[str, str]]:
    import synthindex

    rows = []
    nas = work / "nas100k"
    nas.mkdir()
    app, data = make_box(work, "box100k", f"file://{nas}", parallel=args.parallel)
    studies = args.objects // 10
    t, counts = timed(lambda: synthindex.build(app.index.db, studies=studies, series=2, per_series=5))
    # Every indexed object gets a real sealed file (small: this measures per-object cost, not bytes).
    keyring = app.archive.keyring
    kid = keyring.current_archive_key
    for i in range(1, counts["instances"] + 1):
        oid = synthindex.object_id(i)
        path = app.archive._path(oid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            envelope.seal(io.BytesIO(os.urandom(512)), fh, bytes.fromhex(oid), kid, keyring.archive_key(kid), 1 << 20)
    rows.append(("100k corpus", f"{counts['instances']} objects in {counts['studies']} studies"))
    t, res = timed(app.backup.run)
    assert res.objects == counts["instances"], res
    rows.append(("first sync of the 100k small objects to folder", f"{t:.0f} s ({res.objects / t:.0f} objects/s)"))
    times = []
    for _ in range(5):
        t, res = timed(app.backup.run)
        assert res.objects == 0 and res.result == "success"
        times.append(t)
    rows.append(("incremental sync, nothing new, 100k objects (median of 5)",
                 f"{statistics.median(times):.2f} s (runs: {', '.join(f'{x:.2f}' for x in times)}; "
                 f"snapshot + manifest {res.bytes / 1e6:.1f} MB uploaded)"))
    app.index.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=2048, help="archive size for the throughput runs")
    parser.add_argument("--object-mb", type=int, default=2, help="size of one object")
    parser.add_argument("--objects", type=int, default=100_000, help="objects for the incremental run")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-incremental", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backup-bench-", dir=args.work))
    print("| measurement | result |\n|---|---|", flush=True)
    try:
        if not args.skip_throughput:
            report(throughput(args, work))
        if not args.skip_incremental:
            report(incremental(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: list[tuple[str, str]]) -> None:
    for label, value in rows:
        print(f"| {label} | {value} |", flush=True)


if __name__ == "__main__":
    main()
