#!/usr/bin/env python3
"""The appliance at scale: one server on a big box (bench/scale_build.py), from start through
queries, verification and ingest, with its memory sampled all along.

For each data directory given (built by scale_build.py: N instances in the index *and* a real
sealed object each in the archive), it starts ``pacs-appliance serve`` and measures, in order:

1. start: time from the process start to the first successful C-ECHO (``echoscu`` in a loop),
   and to the log line that says reconciliation finished;
2. C-FIND (STUDY level, 9 keys, the three queries of synthindex.queries): findscu wall time, quiet (-q)
   and printing every response as it does by default
   (process start + association + query) and the time per query on an open association
   (``findscu --repeat 21`` minus ``--repeat 1``, / 20);
3. QIDO-RS (``GET /dicomweb/studies``, the same three queries) and the web study list
   (``GET /studies``) and dashboard (``GET /``) as a logged-in admin;
4. ingest on top: ``storescu`` (TCP_NODELAY=1, one association) of a CT corpus, instances/s;

while the background verification runs every ``--verify-seconds`` (its sample of 200 objects)
and a thread reads the server's VmRSS every 0.2 s. Reported: the largest RSS seen in each
phase and the peak (VmHWM) at the end.

    nice -n 10 .venv/bin/python bench/scale_bench.py /work/scratch-scale/box-1000k [--server-root DIR]
    # PostgreSQL boxes (scale_build.py --pg): their server is started from --pg's work directory
    nice -n 10 .venv/bin/python bench/scale_bench.py --pg /work/scratch-pg /work/scratch-pg/box-1000k-pg
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402

import synthindex  # noqa: E402
from common import (CALLING_AE, PYTHON, ROOT, cpu_seconds, free_port, make_corpus, peak_rss_mb,  # noqa: E402
                    sender_env, stop)
from run_find import RETURN_KEYS, timed  # noqa: E402

PASSWORD = "bench-admin-password"
REPEAT = 20


class RssWatch(threading.Thread):
    """VmRSS of ``pid`` every ``every`` seconds, the maximum kept per phase."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        mb = int(line.split()[1]) / 1024
                        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), mb)
            except OSError:
                return


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})" if values else "-"


def run_box(data: Path, server_root: Path, runs: int, corpus: list[Path], verify_seconds: float,
            extra_env: dict | None = None) -> dict:
    studies = _studies(data)
    dicom_port, http_port = free_port(), free_port()
    env = dict(sender_env(nodelay=False), PACS_DICOM_HOST="127.0.0.1", PACS_DICOM_PORT=str(dicom_port),
               PACS_HTTP_HOST="127.0.0.1", PACS_HTTP_PORT=str(http_port), PACS_STORAGE_RESERVE_MB="16",
               PACS_INTEGRITY_INTERVAL_HOURS=str(verify_seconds / 3600), PYTHONPATH=str(server_root),
               **(extra_env or {}))
    log_path = data.parent / f"{data.name}-serve.log"
    log = open(log_path, "ab")
    log_start = log_path.stat().st_size
    peer = ["-aet", CALLING_AE, "-aec", "PACSBOX", "127.0.0.1", str(dicom_port)]
    started = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-m", "appliance", "serve", "--data", str(data)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=server_root)
    watch = RssWatch(proc.pid)
    watch.start()
    out: dict = {"box": data.name, "studies": studies, "root": server_root}
    load_start = os.getloadavg()[0]
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}; see {log_path}")
            r = subprocess.run(["echoscu"] + peer, capture_output=True)
            if r.returncode == 0:
                break
            if time.perf_counter() - started > 600:
                raise TimeoutError("no C-ECHO answer within 10 minutes")
            time.sleep(0.05)
        out["start_to_echo_s"] = time.perf_counter() - started
        out["reconciled_s"] = _wait_log(log_path, log_start, r"index and archive agree|reconciliation finished|MISSING",
                                        started, proc)
        watch.phase = "C-FIND"
        echo = [timed(["echoscu"] + peer)[0] for _ in range(runs)]
        out["find"] = [("C-ECHO", med(echo), "-", "-", "-", "-")]
        for label, keys, expected in synthindex.queries(studies):
            cmd = ["findscu", "-S", "-k", "QueryRetrieveLevel=STUDY"]
            for k in RETURN_KEYS:
                cmd += ["-k", f"{k}={keys[k]}" if k in keys else k]
            cmd += peer
            timed(cmd)
            # The wall time of the query with findscu quiet (-q): by default findscu formats and prints every
            # response data set, ~30 ms of its own CPU per 1,000 matches whatever the server; that figure is
            # kept beside it. The matches are counted from one verbose run.
            matches = timed(cmd + ["-v"])[1].count("(Pending)")
            walls = [timed(cmd + ["-q"])[0] for _ in range(runs)]
            printed = [timed(cmd)[0] for _ in range(runs)]
            per_query, cpu = [], []
            for _ in range(max(3, runs // 3)):
                c0 = cpu_seconds(proc.pid)
                one = timed(cmd + ["-q", "--repeat", "1"])[0]
                c1 = cpu_seconds(proc.pid)
                many = timed(cmd + ["-q", "--repeat", str(REPEAT + 1)])[0]
                c2 = cpu_seconds(proc.pid)
                per_query.append((many - one) / REPEAT)
                cpu.append(((c2 - c1) - (c1 - c0)) * 1000 / REPEAT)
            out["find"].append((label, med(walls), med(printed), med(per_query), med(cpu),
                                f"{matches} (expected {expected})"))
        watch.phase = "QIDO + web"
        base = f"http://127.0.0.1:{http_port}"
        qido = requests.Session()
        qido.auth = ("admin", PASSWORD)
        out["qido"] = []
        for label, keys, expected in synthindex.queries(studies):
            params = dict(keys, limit="2000")
            qido.get(f"{base}/dicomweb/studies", params=params).raise_for_status()
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                r = qido.get(f"{base}/dicomweb/studies", params=params, headers={"Accept": "application/dicom+json"})
                times.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            out["qido"].append((label, med(times), f"{len(r.json())} (expected {expected})"))
        web = requests.Session()
        token = re.search(r'name="csrf_token" value="([^"]+)"', web.get(base + "/login").text).group(1)
        r = web.post(base + "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token},
                     allow_redirects=False)
        assert r.status_code == 302, r.status_code
        out["web"] = []
        for label, path in (("study list GET /studies", "/studies"), ("dashboard GET /", "/")):
            web.get(base + path).raise_for_status()
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                web.get(base + path).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
            out["web"].append((label, med(times)))
        watch.phase = "ingest"
        t = time.perf_counter()
        r = subprocess.run(["storescu"] + peer + [str(p) for p in corpus], env=sender_env(nodelay=True),
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"storescu failed: {r.stderr[-500:]}")
        out["ingest_per_s"] = len(corpus) / (time.perf_counter() - t)
        watch.phase = "after"
        time.sleep(2)
        out["verifications"] = _count_log(log_path, log_start, r"background verification|verify-sampler|sampled")
        out["hwm_mb"] = peak_rss_mb(proc.pid)
        out["load"] = (load_start, os.getloadavg()[0])
    finally:
        watch.done.set()
        stop(proc)
        log.close()
    out["rss_mb"] = dict(watch.peaks)
    return out


def _studies(data: Path) -> int:
    marker = data / ".bench-complete"
    return eval(marker.read_text())["studies"] if marker.exists() else 0  # noqa: S307 - our own marker


def _wait_log(path: Path, offset: int, pattern: str, started: float, proc, timeout: float = 900) -> float | None:
    rx = re.compile(pattern)
    while time.perf_counter() - started < timeout and proc.poll() is None:
        with open(path, "rb") as fh:
            fh.seek(offset)
            if rx.search(fh.read().decode("utf-8", "replace")):
                return time.perf_counter() - started
        time.sleep(0.1)
    return None


def _count_log(path: Path, offset: int, pattern: str) -> int:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return len(re.findall(pattern, fh.read().decode("utf-8", "replace")))


def report(o: dict) -> None:
    print(f"\n### {o['box']} ({o['studies']:,} studies / {o['studies'] * 10:,} instances)")
    rec = f"{o['reconciled_s']:.1f} s" if o.get("reconciled_s") else "-"
    load = f"load average {o['load'][0]:.1f} at start, {o['load'][1]:.1f} at end"
    print(f"start to first C-ECHO {o['start_to_echo_s']:.2f} s; reconciliation finished at {rec}; "
          f"ingest on top {o['ingest_per_s']:.0f} inst/s; peak RSS (VmHWM) {o['hwm_mb']:.0f} MB; {load}; "
          f"server from {o['root']}")
    print("RSS by phase, MB: " + ", ".join(f"{k} {v:.0f}" for k, v in o["rss_mb"].items()))
    print("\n| C-FIND | findscu -q wall, ms | findscu wall printing the responses, ms | per query on an open association "
          "(-q), ms | server CPU per query, ms | matches |\n|---|---|---|---|---|---|")
    for row in o["find"]:
        print("| " + " | ".join(row) + " |")
    print("\n| QIDO-RS / web | ms | matches |\n|---|---|---|")
    for row in o["qido"]:
        print("| QIDO " + " | ".join(row) + " |")
    for label, t in o["web"]:
        print(f"| {label} | {t} | - |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("boxes", nargs="+", type=Path)
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--server-root", type=Path, default=ROOT)
    p.add_argument("--corpus", type=Path, default=Path("/work/scratch-scale/corpus"))
    p.add_argument("--ingest", type=int, default=1000, help="CT instances sent by the ingest phase")
    p.add_argument("--verify-seconds", type=float, default=20.0)
    p.add_argument("--pg", type=Path, help="scale_build.py --pg's --work: boxes named *-pg keep their index there")
    a = p.parse_args()
    # As installed (image-build/customize compiles the bytecode): with PYTHONDONTWRITEBYTECODE set, as on
    # these machines, every start would otherwise compile the appliance's sources (~1 s of CPU).
    subprocess.run([PYTHON, "-m", "compileall", "-q", "appliance", "web"], cwd=a.server_root, check=True,
                   capture_output=True)
    with contextlib.ExitStack() as stack:
        cluster = None
        if a.pg:
            import pgbox

            cluster = stack.enter_context(pgbox.running(a.pg))
        for box in a.boxes:
            env = {"PACS_INDEX_URL": pgbox.database_url(cluster, box)} if cluster and pgbox.is_pg_box(box) else {}
            run_one(a, box, env)


def run_one(a, box: Path, env: dict) -> None:
    # New UIDs for every run: ingest on top stores new instances, never duplicates of an earlier run.
    fresh = a.corpus / f"{box.name}-{time.strftime('%H%M%S')}"
    corpus = make_corpus(fresh, studies=max(1, a.ingest // 100), series=2, per_series=50, kind="CT", large=False)
    o = run_box(box, a.server_root, a.runs, corpus, a.verify_seconds, env)
    report(o)
    sys.stdout.flush()
    shutil.rmtree(fresh, ignore_errors=True)


if __name__ == "__main__":
    main()
