"""Load: 8 storescu senders at once for a bounded time, while staff browse and a backup runs.

    .venv/bin/python bench/load.py --seconds 120

Each sender loops: one storescu association of BATCH fresh instances (new UIDs,
so every one is really written), timed. Meanwhile one HTTP client logs in and
browses (/studies, a study page, WADO-RS rendered and thumbnail), and the
scheduled backup runs to a folder target (the window covers now, and a preloaded
study is not yet offsite, so it starts with the load). The server's RSS is
sampled every second. Prints: stores attempted/acknowledged/failed, index count,
RSS at start/peak/end, p50/p95 per-association (BATCH images) and HTTP latency,
and the backup result. Everything on 127.0.0.1 in a temporary directory.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402

import synth  # noqa: E402
from helpers import ADMIN_PASSWORD, CLI, Server, init_data_dir  # noqa: E402

SENDERS = 8
BATCH = 10


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def make_batches(directory: Path, sender: int, batches: int) -> list[list[Path]]:
    out = []
    for b in range(batches):
        out.append(synth.write_study(directory / f"s{sender}" / f"b{b}", n_series=1, per_series=BATCH,
                                     kind="CT" if b % 2 else "MR", patient_id=f"LOAD{sender:02d}{b:04d}"))
    return out


def sender(port: int, batches: list[list[Path]], deadline: float, out: dict) -> None:
    for files in batches:
        if time.monotonic() > deadline:
            break
        t0 = time.monotonic()
        r = subprocess.run(["storescu", "-v", "-aec", "PACSBOX", "-aet", "MOD", "127.0.0.1", str(port),
                            *map(str, files)], capture_output=True, text=True)
        out["latency"].append(time.monotonic() - t0)
        ok = r.stderr.count("Received Store Response (Success)")
        out["attempted"] += len(files)
        out["acked"] += ok
        if ok != len(files) or r.returncode:
            out["errors"].append(r.stderr[-400:])


def browser(url: str, deadline: float, out: dict) -> None:
    s = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(f"{url}/login").text).group(1)
    s.post(f"{url}/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    dw = requests.Session()
    dw.auth = ("admin", ADMIN_PASSWORD)
    rng = random.Random(1)
    while time.monotonic() < deadline:
        studies = dw.get(f"{url}/dicomweb/studies?limit=50", headers={"Accept": "application/dicom+json"}).json()
        paths = ["/studies"]
        if studies:
            study = rng.choice(studies)["0020000D"]["Value"][0]
            paths.append(f"/studies/{study}")
            inst = dw.get(f"{url}/dicomweb/studies/{study}/instances",
                          headers={"Accept": "application/dicom+json"}).json()
            if inst:
                i = rng.choice(inst)
                ser, sop = i["0020000E"]["Value"][0], i["00080018"]["Value"][0]
                base = f"/dicomweb/studies/{study}/series/{ser}/instances/{sop}"
                paths += [f"{base}/rendered", f"{base}/thumbnail"]
        for path in paths:
            t0 = time.monotonic()
            r = (dw if path.startswith("/dicomweb") else s).get(url + path)
            out["latency"].append(time.monotonic() - t0)
            out["requests"] += 1
            if r.status_code >= 400:
                out["errors"].append(f"{r.status_code} {path[:60]}")
        time.sleep(0.2)  # a person reading the screen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--batches", type=int, default=60, help="batches prepared per sender (caps the run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pacs-load-") as tmp:
        tmp = Path(tmp)
        data = init_data_dir(tmp / "data")
        print("preparing instances ...", flush=True)
        batches = [make_batches(tmp / "src", i, args.batches) for i in range(SENDERS)]
        preload = synth.write_study(tmp / "pre", n_series=2, per_series=100, patient_id="PRELOAD")
        (tmp / "offsite").mkdir()
        away = (time.localtime().tm_hour + 12) % 24  # a window 12 h from now: no backup during the preload
        env = {"PACS_BACKUP_TARGET": f"file://{tmp / 'offsite'}", "PACS_BACKUP_WINDOW": f"{away:02d}:00-{away:02d}:30"}
        srv = Server(data, env=env).start()  # backup configured but outside its window: the preload stays local
        subprocess.run(["storescu", "-aec", "PACSBOX", "127.0.0.1", str(srv.dicom_port), *map(str, preload)],
                       check=True, capture_output=True)
        srv.stop()
        env["PACS_BACKUP_WINDOW"] = "00:00-23:59"
        srv = Server(data, env=env).start()
        pid = srv.proc.pid
        rss = [(0.0, rss_mb(pid))]
        started = time.monotonic()
        deadline = started + args.seconds
        results = [{"latency": [], "attempted": 0, "acked": 0, "errors": []} for _ in range(SENDERS)]
        web = {"latency": [], "requests": 0, "errors": []}
        threads = [threading.Thread(target=sender, args=(srv.dicom_port, batches[i], deadline, results[i]))
                   for i in range(SENDERS)]
        threads.append(threading.Thread(target=browser, args=(srv.url, deadline, web)))
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            rss.append((time.monotonic() - started, rss_mb(pid)))
        elapsed = time.monotonic() - started
        srv.stop()
        status = json.loads(subprocess.run(CLI + ["backup", "status", "--data", str(data), "--json"],
                                           capture_output=True, text=True).stdout or "{}")
        runs = [{k: r.get(k) for k in ("started_at", "finished_at", "result", "trigger", "objects", "bytes", "error")}
                for r in status.get("history", [])]
        indexed = count_instances(data)
        attempted = sum(r["attempted"] for r in results)
        acked = sum(r["acked"] for r in results)
        lat = [x for r in results for x in r["latency"]]
        errors = [e for r in results for e in r["errors"]]
        values = [m for _t, m in rss]
        settled = [m for t, m in rss if t >= 20] or values  # after warm-up (caches, thread pools)
        print(f"duration {elapsed:.0f} s, {SENDERS} senders x {BATCH}-image associations + 1 browsing client")
        print(f"stores: {attempted} attempted, {acked} acknowledged, {attempted - acked} failed; "
              f"{acked / elapsed:.1f} images/s; index holds {indexed} (expected {acked + len(preload)})")
        print(f"C-STORE association ({BATCH} images): p50 {pct(lat, 50) * 1000:.0f} ms, "
              f"p95 {pct(lat, 95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
        print(f"HTTP: {web['requests']} requests, {len(web['errors'])} errors, p50 {pct(web['latency'], 50) * 1000:.0f} ms,"
              f" p95 {pct(web['latency'], 95) * 1000:.0f} ms, max {max(web['latency']) * 1000:.0f} ms")
        print(f"RSS: start {values[0]:.0f} MiB, at 20 s {settled[0]:.0f} MiB, peak {max(values):.0f} MiB, "
              f"end {values[-1]:.0f} MiB (growth after warm-up {values[-1] - settled[0]:+.0f} MiB)")
        print(f"backup runs: {json.dumps(runs, default=str)[:600]}")
        for e in (errors + web["errors"])[:5]:
            print("error:", e)


def count_instances(data: Path) -> int:
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.index.models import Instance

    cfg = load(data, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return Instance.select().count()
    finally:
        index.close()


if __name__ == "__main__":
    main()
