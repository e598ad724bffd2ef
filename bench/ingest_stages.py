#!/usr/bin/env python3
"""Where one stored instance's time goes, in process (no network): the ingest steps one by one.

Builds the appliance on a fresh data directory (index writer thread running, as when serving),
then stores the first ``--count`` instances of the ingest corpus, timing each step of
``Ingestor.store`` separately, and prints median and p10 wall time per step plus the CPU time of
the whole process per instance. Use it before and after a change to the ingest path; the network
benchmark (run_ingest.py) adds pynetdicom's own work on top.

    .venv/bin/python bench/ingest_stages.py [--count 400]
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
    args = p.parse_args()

    blobs = [f.read_bytes() for f in make_corpus(args.corpus)[: args.count]]
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


if __name__ == "__main__":
    main()
