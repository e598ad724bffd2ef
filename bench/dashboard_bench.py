#!/usr/bin/env python3
"""Dashboard render time on an index of 100,000 instances (target: under 300 ms).

1. Builds (once; cached in --cache) a data directory with 10,000 studies x 2 series x 5
   instances (bench/synthindex.py, the C-FIND benchmark's index), then spreads every
   instance's ``received_at`` over the last 7 days: the worst case for the dashboard,
   whose ingest-rate projection and "last hour" panel read the recent instances.
2. In-process: times ``dashboard.gather`` (the queries) and a full GET / through Flask's
   test client as a logged-in admin (queries + template), ``--runs`` times each.
3. Over HTTP: starts ``pacs-appliance serve`` on the data directory, logs in with
   ``requests`` and times GET / end to end (waitress, session lookup, render).

    .venv/bin/python bench/dashboard_bench.py [--runs 15]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT, free_port, stop, wait_port  # noqa: E402
import synthindex  # noqa: E402

PASSWORD = "bench-admin-password"


def prepare(cache: Path, studies: int) -> Path:
    data = cache / f"dashboard-{studies}"
    marker = data / ".bench-complete"
    if marker.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    pw = cache / "admin.pw"
    pw.write_text(PASSWORD)
    subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(data), "--admin-password-file", str(pw)],
                   check=True, capture_output=True, cwd=ROOT)
    app = load_app(data)
    started = time.perf_counter()
    counts = synthindex.build(app.index.db, studies=studies)
    # Spread arrivals over the last 7 days (newest studies last), like a busy week.
    app.index.db.execute_sql(
        "UPDATE instance SET received_at = datetime('now', '-' || ((? - id) * 604800 / ?) || ' seconds')",
        (counts["instances"], counts["instances"]))
    app.index.db.execute_sql(
        "UPDATE study SET updated_at = datetime('now', '-' || ((? - id) * 604800 / ?) || ' seconds')",
        (studies, studies))
    app.index.close()
    print(f"built index {counts} in {time.perf_counter() - started:.0f} s", flush=True)
    marker.write_text(str(counts))
    return data


def load_app(data: Path):
    os.environ.setdefault("PACS_STORAGE_RESERVE_MB", "16")
    from appliance.app import build
    from appliance.cli import load_config

    return build(load_config(data), with_web=False)


def summary(label: str, samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return (f"{label:<44} median {statistics.median(samples):7.1f} ms   p95 {p95:7.1f} ms   "
            f"min {samples[0]:7.1f} ms   (n={len(samples)})")


def bench_in_process(data: Path, runs: int) -> None:
    from web import create_app
    from web.admin import dashboard

    app = load_app(data)
    flask_app = create_app(app, {"TESTING": True})
    client = flask_app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token}).status_code == 302
    gather, page = [], []
    for _ in range(runs):
        t = time.perf_counter()
        d = dashboard.gather(app)
        gather.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        r = client.get("/")
        page.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and "Latest studies" in r.text
    print(f"index: {d.patients} patients, {d.studies} studies, {d.instances} instances; "
          f"{sum(x['instances'] for x in d.last_hour)} received in the last hour; "
          f"projection {d.disk.bytes_per_day / 1e9:.1f} GB/day, full in {d.disk.days_until_full or 0:.0f} days")
    print(summary("dashboard.gather (queries only)", gather))
    print(summary("GET / in-process (queries + template)", page))
    app.index.close()


def bench_http(data: Path, runs: int) -> None:
    import requests

    http_port, dicom_port = free_port(), free_port()
    env = dict(os.environ, PACS_HTTP_HOST="127.0.0.1", PACS_HTTP_PORT=str(http_port), PACS_DICOM_HOST="127.0.0.1",
               PACS_DICOM_PORT=str(dicom_port), PACS_STORAGE_RESERVE_MB="16", PACS_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([PYTHON, "-m", "appliance", "serve", "--data", str(data)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(proc, http_port, "the web UI")
        base = f"http://127.0.0.1:{http_port}"
        s = requests.Session()
        token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(base + "/login").text).group(1)
        r = s.post(base + "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token},
                   allow_redirects=False)
        assert r.status_code == 302, r.status_code
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            r = s.get(base + "/")
            samples.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        print(summary("GET / over HTTP (serve, waitress)", samples))
    finally:
        stop(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--studies", type=int, default=10_000)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench-dashboard")
    args = p.parse_args()
    data = prepare(args.cache, args.studies)
    bench_in_process(data, args.runs)
    bench_http(data, args.runs)


if __name__ == "__main__":
    main()
