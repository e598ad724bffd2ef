#!/usr/bin/env python3
"""A whole synthetic box for the scale benchmark: an index of N instances and a real archive object for each.

bench/synthindex.py writes the index rows; this adds one small sealed file per instance
under the object id the row names (its plaintext is the bytes whose SHA-256 the row
records, so verification finds every object intact), in the archive's own layout: a
start-up reconciles and verifies a full archive, not an empty one. Cached: a finished
box has a ``.bench-complete`` marker.

    nice -n 10 .venv/bin/python bench/scale_build.py --instances 1000000 --work /work/scratch-scale
    # PostgreSQL: --pg starts bench/pgbox.py's server in <work>/pg and puts the index in a database of its own
    # (box-1000k-pg); or --url postgresql://user@127.0.0.1:PORT/db for a server of your own
    nice -n 10 .venv/bin/python bench/scale_build.py --instances 1000000 --work /work/scratch-pg --pg
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthindex  # noqa: E402
from common import PYTHON, ROOT  # noqa: E402

PASSWORD = "bench-admin-password"


def _parts(data: Path):
    from appliance.app import Parts
    from appliance.cli import load_config

    return Parts(load_config(data))


def _seal_range(args) -> int:
    data, first, last = args
    from appliance.archive import envelope

    archive = _parts(Path(data)).archive
    keyring = archive.keyring
    kid = keyring.current_archive_key
    key = keyring.archive_key(kid)
    made = set()
    for i in range(first, last):
        oid = synthindex.object_id(i)
        path = archive._path(oid)  # bench only: the archive's private layout, to write 1M files fast
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            made.add(path.parent)
        with open(path, "wb") as fh:
            envelope.seal(io.BytesIO(synthindex.object_plaintext(i)), fh, bytes.fromhex(oid), kid, key, 1 << 20)
    return last - first


def build_box(data: Path, instances: int, url: str = "", workers: int = 2) -> dict:
    marker = data / ".bench-complete"
    if marker.exists():
        return eval(marker.read_text())  # noqa: S307 - our own marker: a dict literal
    data.parent.mkdir(parents=True, exist_ok=True)
    pw = data.parent / "admin.pw"
    pw.write_text(PASSWORD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if url:
        env["PACS_INDEX_URL"] = url
    subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(data), "--admin-password-file", str(pw)],
                   check=True, capture_output=True, cwd=ROOT, env=env)
    if url:
        os.environ["PACS_INDEX_URL"] = url
    started = time.perf_counter()
    parts = _parts(data)
    counts = synthindex.build(parts.index.db, studies=instances // 10)
    parts.close()
    print(f"index: {counts} in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    n = counts["instances"]
    step = 20_000
    ranges = [(str(data), a, min(n + 1, a + step)) for a in range(1, n + 1, step)]
    with multiprocessing.Pool(workers) as pool:
        done = 0
        for k in pool.imap_unordered(_seal_range, ranges):
            done += k
            if done % 200_000 < step:
                print(f"  archive: {done:,} objects, {time.perf_counter() - started:.0f} s", flush=True)
    print(f"archive: {n:,} objects in {time.perf_counter() - started:.0f} s", flush=True)
    if not url:  # a box that has been running has an index snapshot (its first start takes one)
        subprocess.run([PYTHON, "-m", "appliance", "index", "snapshot", "--data", str(data)],
                       check=True, capture_output=True, cwd=ROOT, env=env)
    marker.write_text(repr(counts))
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=Path("/work/scratch-scale"))
    p.add_argument("--url", default="", help="a PostgreSQL index (the archive stays under --work)")
    p.add_argument("--pg", action="store_true", help="the index in bench/pgbox.py's server under --work")
    p.add_argument("--name", default="")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    name = a.name or f"box-{a.instances // 1000}k{'-pg' if a.url or a.pg else ''}"
    if not a.pg:
        print(build_box(a.work / name, a.instances, a.url, a.workers))
        return
    import pgbox

    with pgbox.running(a.work) as cluster:
        print(build_box(a.work / name, a.instances, pgbox.database_url(cluster, a.work / name, create=True),
                        a.workers))


if __name__ == "__main__":
    main()
