#!/usr/bin/env python3
"""C-FIND benchmark: study-level query latency on an index of 100,000 instances / 10,000 studies,
and the cost of SQLCipher against plain SQLite.

1. Builds (once; cached in --cache) a data directory whose index holds 10,000 studies of
   2 series x 5 instances, 5,000 patients, written with bench/synthindex.py.
2. Starts ``pacs-appliance serve`` on it and times dcmtk ``findscu`` (Study Root, STUDY level)
   for an exact PatientID, a PatientName wildcard and a one-month StudyDate range, each
   ``--runs`` times; ``echoscu`` is timed the same way as the baseline (process start,
   association set-up and release), so "net" = median - echo median. Per query on one open
   association (``findscu --repeat``) it reports the wall time and the server's CPU time
   (utime+stime of the serve process), which a loaded machine changes much less.
   ``--server-root`` runs the server from another checkout (e.g. a ``git worktree`` of an
   older commit) on the same index, for before/after figures in one session.
3. In-process, with the same rows in an SQLCipher and in a plain SQLite database: the three
   queries through the query engine, and ingest-style index writes (records.record, one
   committed transaction each, synchronous=FULL).

    .venv/bin/python bench/run_find.py [--runs 9] [--skip-sqlcipher-cost] [--server-root DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CALLING_AE, PYTHON, ROOT, cpu_seconds, free_port, sender_env, stop, summarize_ms,  # noqa: E402
                    wait_idle, wait_port)
import synthindex  # noqa: E402

REPEAT = 20
RETURN_KEYS = ["PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
               "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries", "StudyDescription"]


def load_app(data: Path):
    os.environ.setdefault("PACS_STORAGE_RESERVE_MB", "16")
    from appliance.app import build
    from appliance.cli import load_config

    return build(load_config(data), with_web=False)


def prepare(cache: Path, studies: int) -> Path:
    data = cache / f"find-{studies}"
    marker = data / ".bench-complete"
    if marker.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    pw = cache / "admin.pw"
    pw.write_text("bench-admin-password")
    subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(data), "--admin-password-file", str(pw)],
                   check=True, capture_output=True, cwd=ROOT)
    app = load_app(data)
    started = time.perf_counter()
    counts = synthindex.build(app.index.db, studies=studies)
    app.index.close()
    print(f"built index {counts} in {time.perf_counter() - started:.0f} s", flush=True)
    marker.write_text(str(counts))
    return data


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=sender_env(nodelay=True), timeout=120)
    elapsed = (time.perf_counter() - started) * 1000
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr[-500:]}")
    return elapsed, out.stdout + out.stderr


def bench_dimse(data: Path, runs: int, studies: int, server_root: Path = ROOT) -> None:
    port = free_port()
    env = sender_env(nodelay=False)
    env.update({"PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(port), "PACS_HTTP_HOST": "127.0.0.1",
                "PACS_HTTP_PORT": str(free_port()), "PACS_STORAGE_RESERVE_MB": "16", "PYTHONPATH": str(server_root)})
    log = open(data.parent / "find-serve.log", "ab")
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen([PYTHON, "-m", "appliance", "serve", "--data", str(data)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=server_root)
    try:
        wait_port(proc, port, "pacs-appliance serve")
        wait_idle(proc.pid)
        peer = ["-aet", CALLING_AE, "-aec", "PACSBOX", "127.0.0.1", str(port)]
        echo = [timed(["echoscu"] + peer)[0] for _ in range(runs)]
        rows = [("C-ECHO (baseline: process start + association)", echo, "-", [], [], [])]
        for label, keys, expected in synthindex.queries(studies):
            cmd = ["findscu", "-S", "-k", "QueryRetrieveLevel=STUDY"]
            for k in RETURN_KEYS:
                cmd += ["-k", f"{k}={keys[k]}" if k in keys else k]
            cmd += peer
            timed(cmd)  # warm-up: first query on a fresh process opens the reader's connection
            times, nets, matches = [], [], None
            for _ in range(runs):  # each query run right after an echo run: the pair sees the same load
                echo_ms = timed(["echoscu"] + peer)[0]
                ms, out = timed(cmd + ["-v"])
                times.append(ms)
                nets.append(ms - echo_ms)
                matches = out.count("(Pending)")
            if matches != expected:
                raise RuntimeError(f"{label}: {matches} matches, expected {expected}")
            # Latency on an open association: findscu --repeat runs the query N times on one association.
            per_query, cpu_per_query = [], []
            for _ in range(max(3, runs // 3)):
                cpu0 = cpu_seconds(proc.pid)
                one = timed(cmd + ["--repeat", "1"])[0]
                cpu1 = cpu_seconds(proc.pid)
                many = timed(cmd + ["--repeat", str(REPEAT + 1)])[0]
                cpu2 = cpu_seconds(proc.pid)
                per_query.append((many - one) / REPEAT)
                cpu_per_query.append(((cpu2 - cpu1) - (cpu1 - cpu0)) * 1000 / REPEAT)
            rows.append((label, times, matches, nets, per_query, cpu_per_query))
        print(f"\nC-FIND STUDY on {studies:,} studies / {studies * 10:,} instances, {runs} runs each, ms; server from "
              f"{server_root}; load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end")
        print("| query | findscu wall time | minus the C-ECHO run just before it | per query on an open association "
              f"(findscu --repeat {REPEAT + 1} vs 1, / {REPEAT}) | server CPU per query (same runs) | matches |\n"
              "|---|---|---|---|---|---|")
        for label, times, matches, nets, per_query, cpu in rows:
            print(f"| {label} | {summarize_ms(times)} | {summarize_ms(nets)} | {summarize_ms(per_query)} | "
                  f"{summarize_ms(cpu)} | {matches} |")
    finally:
        stop(proc)
        log.close()


def bench_sqlcipher_cost(cache: Path, runs: int, studies: int) -> None:
    """The same rows and work in SQLCipher (the appliance's index) and in plain SQLite."""
    from peewee import SqliteDatabase
    from playhouse.migrations import Runner

    from appliance.index import query
    from appliance.index.db import MIGRATIONS_DIR, IndexDatabase
    from appliance.index.records import record
    from appliance.records.instances import InstanceAttributes

    pragmas = {"journal_mode": "wal", "synchronous": "full", "foreign_keys": 1, "busy_timeout": 30000,
               "cache_size": -1024 * 64, "temp_store": "memory"}
    work = Path(tempfile.mkdtemp(prefix="pacs-bench-cipher-", dir=cache))
    dbs = {"SQLCipher": lambda p: IndexDatabase(p, os.urandom(32)),
           "plain SQLite": lambda p: SqliteDatabase(str(p), pragmas=pragmas, check_same_thread=False)}
    results = {}
    try:
        for name, make in dbs.items():
            db = make(work / f"{name.replace(' ', '-')}.db")
            db.connect()
            Runner(db, directory=str(MIGRATIONS_DIR)).up()
            synthindex.build(db, studies=studies)
            q_times = {}
            for label, keys, _expected in synthindex.queries(studies):
                query.search(db, "STUDY", keys)  # warm the page cache, as a running server's is
                samples = []
                for _ in range(runs):
                    started = time.perf_counter()
                    query.search(db, "STUDY", keys)
                    samples.append((time.perf_counter() - started) * 1000)
                q_times[label] = samples
            # Ingest-style writes: one committed (fsynced) transaction per instance, as the writer does.
            w_times = []
            for i in range(200):
                a = InstanceAttributes(
                    patient_id=f"NEW{i // 50}", issuer="", patient_name="NEW^PATIENT", birth_date="19700101", sex="O",
                    study_uid=f"2.25.98.{i // 50}", study_date="20260101", study_time="101500", accession="",
                    study_id="1", study_description="", referring_physician="", patient_age="", institution="",
                    series_uid=f"2.25.98.{i // 50}.{i // 25}", modality="CT", series_number=1, series_description="",
                    body_part="", series_date="20260101", series_time="101500", sop_uid=f"2.25.98.9.{i}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2", instance_number=i, transfer_syntax="1.2.840.10008.1.2.1",
                    station_name="", rows=128, columns=128, frames=None, content_date="", content_time="")
                started = time.perf_counter()
                with db.atomic("IMMEDIATE"):
                    record(db, a, f"{i:032x}", 1000, f"{i:064x}", "bench")
                w_times.append((time.perf_counter() - started) * 1000)
            results[name] = (q_times, w_times)
            db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nSQLCipher vs plain SQLite, in-process, same {studies:,}-study index; median (min-max) ms")
    names = list(results)
    print("| operation | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for label in results[names[0]][0]:
        print(f"| query: {label} ({runs} runs) | " + " | ".join(summarize_ms(results[n][0][label]) for n in names) + " |")
    print("| index write of one instance, committed with fsync (200 runs) | "
          + " | ".join(summarize_ms(results[n][1]) for n in names) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--studies", type=int, default=10_000)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench-find")
    p.add_argument("--skip-sqlcipher-cost", action="store_true")
    p.add_argument("--server-root", type=Path, default=ROOT,
                   help="checkout to run the server from (default: this one), e.g. a git worktree of an older commit")
    args = p.parse_args()
    data = prepare(args.cache, args.studies)
    bench_dimse(data, args.runs, args.studies, args.server_root.resolve())
    if not args.skip_sqlcipher_cost:
        bench_sqlcipher_cost(args.cache, args.runs, args.studies)


if __name__ == "__main__":
    main()
