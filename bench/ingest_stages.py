#!/usr/bin/env python3
"""Where one stored instance's time goes, in process (no network): the ingest steps one by one.

Builds the appliance on a fresh data directory (index writer thread running, as when serving),
then stores the first ``--count`` instances of the ingest corpus, timing each step of
``Ingestor.store`` separately, and prints median and p10 wall time per step plus the CPU time of
the whole process per instance. Use it before and after a change to the ingest path; the network
benchmark (run_ingest.py) adds pynetdicom's own work on top.

    .venv/bin/python bench/ingest_stages.py [--count 400] [--overlap | --parse-only]

``--overlap`` instead times the seal three ways, alternating instance by instance: serial (parse,
then ``archive.put``), ``archive.put`` on a second thread while this one parses, and the parse on
a second thread while this one puts; the plain run shows the parse and the put (encrypt + write + fsync) alone.
Issue 18 item 2: is the overlap worth its thread hand-off? ``--parse-only`` times
``dicomfile.parse`` alone (three passes over the instances, after one warm-up pass): process CPU
per parse, steadier than wall time on a loaded machine.
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import PYTHON, make_corpus  # noqa: E402

from appliance import config as config_mod  # noqa: E402
from appliance.app import build  # noqa: E402
from appliance.ingest import Origin  # noqa: E402
from appliance.ingest.dicomfile import parse  # noqa: E402

STEPS = ("free space", "parse", "duplicate check", "archive put", "index write + commit", "total")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench-corpus")
    p.add_argument("--overlap", action="store_true", help="compare a serial and an overlapped seal")
    p.add_argument("--parse-only", action="store_true", help="time dicomfile.parse alone (process CPU)")
    args = p.parse_args()

    blobs = [f.read_bytes() for f in make_corpus(args.corpus)[: args.count]]
    if args.parse_only:
        for data in blobs:  # warm-up: imports, caches
            parse(io.BytesIO(data), len(data))
        started = time.process_time()
        for data in blobs * 3:
            parse(io.BytesIO(data), len(data))
        print(f"parse alone: {(time.process_time() - started) * 1000 / (3 * len(blobs)):.3f} ms process CPU "
              f"per instance ({len(blobs)} instances, 3 passes)")
        return
    with tempfile.TemporaryDirectory(prefix="pacs-stages-") as tmp:
        data_dir = Path(tmp) / "data"
        password = Path(tmp) / "pw"
        password.write_text("stages-bench-password")
        subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(data_dir), "--admin-password-file",
                        str(password)], check=True, capture_output=True)
        app = build(config_mod.load(data_dir), with_web=False)
        app.index.start()
        app.audit.start()  # as when serving: stores are audited in batches
        ingestor, origin = app.ingestor, Origin("dicom", "BENCH@127.0.0.1")
        if args.overlap:
            try:
                _overlap(app, blobs)
            finally:
                app.audit.stop()
                app.index.close()
            return
        times: dict[str, list[float]] = {step: [] for step in STEPS}
        cpu_started = time.process_time()
        for data in blobs:
            src = io.BytesIO(data)
            t0 = time.perf_counter()
            ingestor.check_space(len(data))
            t1 = time.perf_counter()
            parsed = parse(src, len(data))
            t2 = time.perf_counter()
            ingestor._stored(parsed.attributes.sop_uid)
            t3 = time.perf_counter()
            stored = app.archive.put(src)
            t4 = time.perf_counter()
            app.index.writer.run(lambda: ingestor._record(parsed.attributes, stored, origin, {}))
            t5 = time.perf_counter()
            for step, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                times[step].append(seconds * 1000)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / len(blobs)
        app.audit.stop()
        app.index.close()

    print(f"{len(blobs)} instances, ms per instance (median / p10):")
    for step in STEPS:
        values = sorted(times[step])
        print(f"  {step:22s} {statistics.median(values):6.3f} / {values[len(values) // 10]:6.3f}")
    print(f"  process CPU per instance {cpu_ms:.2f} ms (all threads)")


def _overlap(app, blobs: list[bytes]) -> None:
    """Serial and overlapped parse + put, alternating per instance; wall and thread CPU per way."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    ways = ("serial", "put on thread", "parse on thread")
    wall: dict[str, list[float]] = {way: [] for way in ways}
    cpu = {way: 0.0 for way in ways}
    for n, data in enumerate(blobs * len(ways)):
        way = ways[n % len(ways)]
        c0, t0 = time.process_time(), time.perf_counter()
        if way == "serial":
            parse(io.BytesIO(data), len(data))
            app.archive.put(io.BytesIO(data))
        elif way == "put on thread":
            future = pool.submit(app.archive.put, io.BytesIO(data))
            parse(io.BytesIO(data), len(data))
            future.result()
        else:  # the put's encrypt + write hold the GIL; its fsync does not: parse runs then
            future = pool.submit(parse, io.BytesIO(data), len(data))
            app.archive.put(io.BytesIO(data))
            future.result()
        wall[way].append((time.perf_counter() - t0) * 1000)
        cpu[way] += (time.process_time() - c0) * 1000
    pool.shutdown()
    print(f"{len(blobs)} instances each way, seal (parse + put) ms per instance: median / p10 wall, process CPU")
    for way, values in wall.items():
        values.sort()
        print(f"  {way:16s} {statistics.median(values):6.3f} / {values[len(values) // 10]:6.3f}   "
              f"CPU {cpu[way] / len(values):.3f}")


if __name__ == "__main__":
    main()
