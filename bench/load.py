"""Load: 8 storescu senders at once for a bounded time, while staff browse and a backup runs.

    .venv/bin/python bench/load.py --seconds 120
    nice -n 10 .venv/bin/python bench/load.py --soak --seconds 1500 --tracemalloc 1 --json soak.json

Each sender loops: one storescu association of BATCH fresh instances (new UIDs,
so every one is really written), timed. Meanwhile one HTTP client logs in and
browses (/studies, a study page, WADO-RS rendered and thumbnail), and the
scheduled backup runs to a folder target (the window covers now, and a preloaded
study is not yet offsite, so it starts with the load). The server's RSS is
sampled every second. Prints: stores attempted/acknowledged/failed, index count,
RSS at start/peak/end, p50/p95 per-association (BATCH images) and HTTP latency,
and the backup result. Everything on 127.0.0.1 in a temporary directory.

``--soak`` is the long version for memory boundedness: each sender regenerates a
batch with fresh UIDs after sending it (so a 30-minute run needs no 2 GB of
prepared files), a backup is requested again as soon as the last one finished
(so one is running all along), RSS, threads and open index connections are
sampled every ``--rss-every`` seconds, and the report gives RSS at fixed times
and browsing latency of the first vs the last minutes. ``--tracemalloc N`` runs
the server with a small start-up hook (a sitecustomize.py written into the
temporary directory, on the server's PYTHONPATH only; the appliance itself is
unchanged) that traces Python allocations with N frames, reports traced memory
and the sizes of the LRU caches each sample, and dumps snapshots after warm-up,
every ``--snapshot-every`` seconds and at the end; the report lists the source
lines whose traced memory grew most between the first and the last snapshot.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import textwrap
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
WARMUP = 60.0  # seconds before the first tracemalloc snapshot (caches and thread pools filling)

# Runs inside the server process (PYTHONPATH) when --soak or --tracemalloc is given.
HOOK = textwrap.dedent('''
    import gc, json, os, threading, time, tracemalloc

    OUT = os.environ["PACS_BENCH_HOOK_DIR"]
    FRAMES = int(os.environ.get("PACS_BENCH_TRACEMALLOC", "0"))
    EVERY = float(os.environ.get("PACS_BENCH_SAMPLE_EVERY", "10"))
    SNAP_EVERY = float(os.environ.get("PACS_BENCH_SNAPSHOT_EVERY", "300"))
    WARMUP = float(os.environ.get("PACS_BENCH_WARMUP", "60"))
    BACKUP = os.environ.get("PACS_BENCH_BACKUP_LOOP") == "1"
    if FRAMES:
        tracemalloc.start(FRAMES)
    import appliance.app as _app_module

    _build, _holder = _app_module.build, {}

    def build(*args, **kwargs):
        _holder["app"] = app = _build(*args, **kwargs)
        threading.Thread(target=_watch, name="bench-hook", daemon=True).start()
        return app

    _app_module.build = build

    def _native():
        """SQLite's own allocations (page caches of every connection) and glibc's heap: in use vs held free."""
        import ctypes, sqlcipher3._sqlite3 as sq
        out = {}
        try:
            used = ctypes.CDLL(sq.__file__).sqlite3_memory_used
            used.restype = ctypes.c_int64
            out["sqlite_mb"] = used() / 2**20
        except (OSError, AttributeError):
            pass
        try:
            class MallInfo2(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
            libc = ctypes.CDLL("libc.so.6")
            libc.mallinfo2.restype = MallInfo2
            mi = libc.mallinfo2()
            out["malloc_in_use_mb"] = (mi.uordblks + mi.hblkhd) / 2**20
            out["malloc_free_held_mb"] = mi.fordblks / 2**20
        except (OSError, AttributeError):
            pass
        try:
            from appliance import malloc
            out["malloc_arenas"] = malloc.arenas()
        except (ImportError, AttributeError):
            pass
        return out

    def _maps():
        """Resident memory by kind of mapping: glibc's main heap (brk), anonymous maps (obmalloc's 1 MiB
        arenas, glibc's mmapped blocks, thread stacks), files (libraries, SQLite's -shm)."""
        out, kind = {"rss_heap_mb": 0.0, "rss_anon_mb": 0.0, "rss_file_mb": 0.0}, None
        try:
            with open("/proc/self/smaps") as fh:
                for line in fh:
                    if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                        parts = line.split()
                        name = parts[5] if len(parts) > 5 else ""
                        kind = ("rss_heap_mb" if name == "[heap]" else "rss_anon_mb" if not name or name.startswith("[anon")
                                else None if name.startswith("[") else "rss_file_mb")
                    elif line.startswith("Rss:") and kind:
                        out[kind] += int(line.split()[1]) / 1024
        except OSError:
            pass
        return out

    def _obmalloc():
        """Python's small-object allocator (sys._debugmallocstats, written to fd 2): arenas mapped vs bytes in
        live blocks; the difference is memory the arenas hold for freed objects (fragmentation)."""
        import re, sys, tempfile
        if not hasattr(sys, "_debugmallocstats"):
            return {}
        with tempfile.TemporaryFile(mode="w+") as tmp:
            saved = os.dup(2)
            try:
                sys.stderr.flush()
                os.dup2(tmp.fileno(), 2)
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read()
        def num(label):
            m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
            return int(m.group(1).replace(",", "")) if m else 0
        return {"obmalloc_arenas": num("# arenas allocated current"),
                "obmalloc_arenas_mb": num("arenas * 1048576 bytes/arena") / 2**20 or num("Total") / 2**20,
                "obmalloc_used_mb": num("# bytes in allocated blocks") / 2**20}

    def _caches():
        from appliance.convert.render_cache import LRUCache
        return [{"used": c.size, "max": c.max_size, "entries": len(c._items)}
                for c in gc.get_objects() if isinstance(c, LRUCache)]

    def _snapshot(name):
        gc.collect()
        tracemalloc.take_snapshot().dump(os.path.join(OUT, name + ".snap"))

    def _watch():
        started = time.monotonic()
        next_snap, n = started + WARMUP, 0
        last_backup_check = 0.0
        with open(os.path.join(OUT, "samples.jsonl"), "a") as out:
            while True:
                now = time.monotonic()
                app = _holder["app"]
                if BACKUP and app.backup is not None and now - last_backup_check > 5:
                    last_backup_check = now
                    try:
                        if not app.backup._running and app.backup.scheduler is not None:
                            app.backup.run_now("bench")
                    except Exception as exc:  # noqa: BLE001
                        print("bench hook: backup request failed:", exc, flush=True)
                row = {"t": now - started, "threads": threading.active_count(), **_native(), **_maps()}
                if int(now - started) % 60 < EVERY:
                    row.update(_obmalloc())
                if FRAMES:
                    row["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
                    row["tracemalloc_overhead_mb"] = tracemalloc.get_tracemalloc_memory() / 2**20
                    if now >= next_snap:
                        _snapshot(f"snap-{n:02d}-{int(now - started):05d}s")
                        n += 1
                        next_snap = now + SNAP_EVERY
                    if os.path.exists(os.path.join(OUT, "snap-now")):
                        _snapshot("snap-99-final")
                        os.unlink(os.path.join(OUT, "snap-now"))
                if int(row["t"]) % 60 < EVERY:
                    row["caches"] = _caches()
                out.write(json.dumps(row) + "\\n")
                out.flush()
                time.sleep(EVERY)
''')


def index_connections(pid: int) -> int:
    """Open SQLite connections to the index: each holds one descriptor on index.db."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            n += os.readlink(fd).endswith("/index.db")
        except OSError:
            pass
    return n


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


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


def sender(port: int, batches: list[list[Path]], deadline: float, out: dict, regenerate: bool = False) -> None:
    """Send the batches in turn; with ``regenerate`` cycle through them for ever, each rewritten with
    fresh UIDs after it was sent (every store is a new object, the prepared files stay few)."""
    i = 0
    while time.monotonic() < deadline and (regenerate or i < len(batches)):
        slot = i % len(batches)
        files = batches[slot]
        t0 = time.monotonic()
        r = subprocess.run(["storescu", "-v", "-aec", "PACSBOX", "-aet", "MOD", "127.0.0.1", str(port),
                            *map(str, files)], capture_output=True, text=True)
        out["latency"].append(time.monotonic() - t0)
        ok = r.stderr.count("Received Store Response (Success)")
        out["attempted"] += len(files)
        out["acked"] += ok
        if ok != len(files) or r.returncode:
            out["errors"].append(r.stderr[-400:])
        if regenerate:
            directory = files[0].parent
            shutil.rmtree(directory)
            batches[slot] = synth.write_study(directory, n_series=1, per_series=BATCH, kind="CT" if i % 2 else "MR",
                                              patient_id=f"LOAD{i % 97:02d}{slot:04d}")
        i += 1


def browser(url: str, deadline: float, out: dict, metadata: bool = False) -> None:
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
            if metadata:  # what OHIF asks first: every instance's header (the DICOMweb header cache)
                paths.append(f"/dicomweb/studies/{study}/metadata")
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
            out["at"].append(t0)
            out["requests"] += 1
            if r.status_code >= 400:
                out["errors"].append(f"{r.status_code} {path[:60]}")
        time.sleep(0.2)  # a person reading the screen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--batches", type=int, default=60, help="batches prepared per sender (caps the run unless --soak)")
    ap.add_argument("--soak", action="store_true",
                    help="long run: senders cycle through --batches with fresh UIDs, a backup runs all along, "
                         "RSS sampled every --rss-every s")
    ap.add_argument("--rss-every", type=float, default=None, help="RSS sample interval, s (1, or 10 with --soak)")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="trace Python allocations in the server with this many frames (0: off)")
    ap.add_argument("--snapshot-every", type=float, default=300, help="tracemalloc snapshot interval, s")
    ap.add_argument("--metadata", action="store_true",
                    help="the browsing client also fetches each study's DICOMweb metadata, as OHIF does")
    ap.add_argument("--json", type=Path, help="write the raw samples and figures here")
    args = ap.parse_args()
    every = args.rss_every or (10.0 if args.soak else 1.0)
    batches_per_sender = min(args.batches, 6) if args.soak else args.batches
    with tempfile.TemporaryDirectory(prefix="pacs-load-") as tmp:
        tmp = Path(tmp)
        data = init_data_dir(tmp / "data")
        print("preparing instances ...", flush=True)
        batches = [make_batches(tmp / "src", i, batches_per_sender) for i in range(SENDERS)]
        preload = synth.write_study(tmp / "pre", n_series=2, per_series=100, patient_id="PRELOAD")
        (tmp / "offsite").mkdir()
        away = (time.localtime().tm_hour + 12) % 24  # a window 12 h from now: no backup during the preload
        env = {"PACS_BACKUP_TARGET": f"file://{tmp / 'offsite'}", "PACS_BACKUP_WINDOW": f"{away:02d}:00-{away:02d}:30"}
        srv = Server(data, env=env).start()  # backup configured but outside its window: the preload stays local
        subprocess.run(["storescu", "-aec", "PACSBOX", "127.0.0.1", str(srv.dicom_port), *map(str, preload)],
                       check=True, capture_output=True)
        srv.stop()
        env["PACS_BACKUP_WINDOW"] = "00:00-23:59"
        hook_dir = tmp / "hook"
        if args.soak or args.tracemalloc:
            hook_dir.mkdir()
            (hook_dir / "sitecustomize.py").write_text(HOOK)
            env.update({"PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                        "PACS_BENCH_HOOK_DIR": str(hook_dir), "PACS_BENCH_TRACEMALLOC": str(args.tracemalloc),
                        "PACS_BENCH_SAMPLE_EVERY": str(every), "PACS_BENCH_SNAPSHOT_EVERY": str(args.snapshot_every),
                        "PACS_BENCH_WARMUP": str(WARMUP), "PACS_BENCH_BACKUP_LOOP": "1" if args.soak else "0"})
        srv = Server(data, env=env).start()
        pid = srv.proc.pid
        rss = [(0.0, rss_mb(pid), threads_of(pid), index_connections(pid))]
        started = time.monotonic()
        deadline = started + args.seconds
        results = [{"latency": [], "attempted": 0, "acked": 0, "errors": []} for _ in range(SENDERS)]
        web = {"latency": [], "at": [], "requests": 0, "errors": []}
        threads = [threading.Thread(target=sender, args=(srv.dicom_port, batches[i], deadline, results[i], args.soak))
                   for i in range(SENDERS)]
        threads.append(threading.Thread(target=browser, args=(srv.url, deadline, web, args.metadata)))
        for t in threads:
            t.start()
        next_sample = started + every
        while any(t.is_alive() for t in threads):
            time.sleep(max(0.0, min(1.0, next_sample - time.monotonic())))
            if time.monotonic() >= next_sample:
                next_sample += every
                rss.append((time.monotonic() - started, rss_mb(pid), threads_of(pid), index_connections(pid)))
                if args.soak and len(rss) % max(1, int(300 / every)) == 0:
                    print(f"  {rss[-1][0]:6.0f} s: RSS {rss[-1][1]:.0f} MiB, {rss[-1][2]} threads, "
                          f"{rss[-1][3]} index connections, {sum(r['acked'] for r in results)} stored", flush=True)
        elapsed = time.monotonic() - started
        rss.append((elapsed, rss_mb(pid), threads_of(pid), index_connections(pid)))
        if args.tracemalloc:
            (hook_dir / "snap-now").touch()
            deadline_snap = time.monotonic() + 120
            while (hook_dir / "snap-now").exists() and time.monotonic() < deadline_snap:
                time.sleep(0.5)
        srv.stop()
        status = json.loads(subprocess.run(CLI + ["backup", "status", "--data", str(data), "--json"],
                                           capture_output=True, text=True).stdout or "{}")
        runs = [{k: r.get(k) for k in ("started_at", "finished_at", "result", "trigger", "objects", "bytes", "error")}
                for r in status.get("history", [])]
        indexed, backups, backups_ok = count_instances(data)
        attempted = sum(r["attempted"] for r in results)
        acked = sum(r["acked"] for r in results)
        lat = [x for r in results for x in r["latency"]]
        errors = [e for r in results for e in r["errors"]]
        values = [m for _t, m, *_ in rss]
        settled = [m for t, m, *_ in rss if t >= 20] or values  # after warm-up (caches, thread pools)
        print(f"duration {elapsed:.0f} s, {SENDERS} senders x {BATCH}-image associations + 1 browsing client")
        print(f"stores: {attempted} attempted, {acked} acknowledged, {attempted - acked} failed; "
              f"{acked / elapsed:.1f} images/s; index holds {indexed} (expected {acked + len(preload)})")
        print(f"C-STORE association ({BATCH} images): p50 {pct(lat, 50) * 1000:.0f} ms, "
              f"p95 {pct(lat, 95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
        print(f"HTTP: {web['requests']} requests, {len(web['errors'])} errors, p50 {pct(web['latency'], 50) * 1000:.0f} ms,"
              f" p95 {pct(web['latency'], 95) * 1000:.0f} ms, max {max(web['latency']) * 1000:.0f} ms")
        print(f"RSS: start {values[0]:.0f} MiB, at 20 s {settled[0]:.0f} MiB, peak {max(values):.0f} MiB, "
              f"end {values[-1]:.0f} MiB (growth after warm-up {values[-1] - settled[0]:+.0f} MiB)")
        print(f"backup runs: {backups} ({backups_ok} succeeded); last: {json.dumps(runs[:2], default=str)[:600]}")
        report = {"elapsed": elapsed, "attempted": attempted, "acked": acked, "indexed": indexed,
                  "expected": acked + len(preload), "rss": rss, "backup_runs": runs, "backups": [backups, backups_ok],
                  "store_latency": lat, "http_latency": list(zip(web["at"], web["latency"]))}
        if args.soak:
            report.update(soak_report(rss, web, started, elapsed))
        if args.tracemalloc or args.soak:
            report["hook"] = hook_report(hook_dir)
        if args.json:
            args.json.write_text(json.dumps(report, default=str))
        for e in (errors + web["errors"])[:5]:
            print("error:", e)


def soak_report(rss: list, web: dict, started: float, elapsed: float) -> dict:
    """RSS at fixed times and browsing latency of the first vs the last five minutes."""
    out = {}
    print("RSS over time (MiB, threads, open index connections):")
    for mark in [0, 60, 300, 600, 900, 1200, 1500, 1800, elapsed]:
        if mark > elapsed:
            continue
        t, m, th, conns = min(rss, key=lambda row: abs(row[0] - mark))
        print(f"  {t / 60:5.1f} min: {m:6.0f} MiB  {th:3d} threads  {conns:2d} index connections")
        out[f"rss_at_{int(mark)}"] = m
    window = min(300.0, elapsed / 3)
    first = [lat for at, lat in zip(web["at"], web["latency"]) if at - started < window]
    last = [lat for at, lat in zip(web["at"], web["latency"]) if at - started > elapsed - window]
    print(f"browsing latency, first {window:.0f} s: p50 {pct(first, 50) * 1000:.0f} ms, p95 {pct(first, 95) * 1000:.0f} ms"
          f" ({len(first)} requests); last {window:.0f} s: p50 {pct(last, 50) * 1000:.0f} ms, "
          f"p95 {pct(last, 95) * 1000:.0f} ms ({len(last)} requests)")
    out.update(http_first=(pct(first, 50), pct(first, 95)), http_last=(pct(last, 50), pct(last, 95)))
    return out


def hook_report(hook_dir: Path) -> dict:
    """What the in-server hook saw: traced memory, cache sizes, and the lines whose memory grew."""
    import tracemalloc

    samples = [json.loads(line) for line in (hook_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    out: dict = {"samples": samples}
    if samples:
        print("inside the server (MiB): SQLite = sqlite3_memory_used (all page caches); malloc = glibc heap in use"
              " / held free; traced = Python heap (tracemalloc, its own bookkeeping excluded)")
        end = samples[-1]["t"]
        for mark in [m for m in (0, WARMUP, 300, 600, 900, 1200, 1500, 1800) if m < end - 30] + [end]:
            row = min(samples, key=lambda r: abs(r["t"] - mark))
            print(f"  {row['t'] / 60:5.1f} min: SQLite {row.get('sqlite_mb', float('nan')):6.1f}  malloc "
                  f"{row.get('malloc_in_use_mb', float('nan')):6.1f} / {row.get('malloc_free_held_mb', float('nan')):6.1f}"
                  f"  traced {row.get('traced_mb', float('nan')):6.1f} (+{row.get('tracemalloc_overhead_mb', 0):.1f})"
                  f"  {row['threads']} threads")
        print("resident by mapping (MiB): glibc heap / anonymous maps / files; Python arenas mapped / in live blocks")
        for mark in [m for m in (0, WARMUP, 300, 600, 900, 1200, 1500, 1800) if m < end - 30] + [end]:
            row = min(samples, key=lambda r: abs(r["t"] - mark))
            ob = min((r for r in samples if "obmalloc_arenas_mb" in r), key=lambda r: abs(r["t"] - mark), default={})
            print(f"  {row['t'] / 60:5.1f} min: {row.get('rss_heap_mb', float('nan')):6.1f} / "
                  f"{row.get('rss_anon_mb', float('nan')):6.1f} / {row.get('rss_file_mb', float('nan')):5.1f};  "
                  f"{ob.get('obmalloc_arenas_mb', float('nan')):6.1f} / {ob.get('obmalloc_used_mb', float('nan')):6.1f}")
    caches = [s for s in samples if "caches" in s]
    if caches:
        print("LRU caches (used / max) at the end:",
              ", ".join(f"{c['used'] / 2**20:.1f}/{c['max'] / 2**20:.0f} MiB ({c['entries']})" if c["max"] > 100000
                        else f"{c['used']}/{c['max']} entries" for c in caches[-1]["caches"]))
    snaps = sorted(hook_dir.glob("*.snap"))
    if len(snaps) >= 2:
        first, last = tracemalloc.Snapshot.load(str(snaps[0])), tracemalloc.Snapshot.load(str(snaps[-1]))
        skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
        first, last = first.filter_traces(skip), last.filter_traces(skip)
        growth = last.compare_to(first, "lineno")
        total = sum(s.size_diff for s in growth)
        print(f"traced growth {snaps[0].stem} -> {snaps[-1].stem}: {total / 2**20:+.1f} MiB; largest by line:")
        out["growth"] = []
        for stat in growth[:15]:
            frame = stat.traceback[0]
            line = f"{stat.size_diff / 2**10:+9.0f} KiB {stat.count_diff:+7d} blocks  {frame.filename}:{frame.lineno}"
            print("  " + line)
            out["growth"].append(line)
        by_file = last.compare_to(first, "filename")
        out["growth_by_file"] = [f"{s.size_diff / 2**10:+.0f} KiB {s.traceback[0].filename}" for s in by_file[:10]]
    return out


def count_instances(data: Path) -> tuple[int, int, int]:
    """Instances in the index, backup runs recorded and how many of them succeeded."""
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.index.models import Instance
    from appliance.index.models.backup import BackupRun

    cfg = load(data, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return (Instance.select().count(index.db), BackupRun.select().count(index.db),
                BackupRun.select().where(BackupRun.result == "success").count(index.db))
    finally:
        index.close()


if __name__ == "__main__":
    main()
