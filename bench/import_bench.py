"""Import throughput: a 2,000-file folder through the watched inbox and through `pacs-appliance import`.

    .venv/bin/python bench/import_bench.py [--runs 3] [--workers 2,4] [--files 2000]

Inbox: the corpus is staged on the same file system, then renamed into
<data>/inbox in one step (a folder dropped at once); the clock runs from the
rename until the inbox is empty again, so it includes the stability wait
([inbox] stable_seconds, default 2 s) and the scan. CLI: the wall time of the
whole command, process start-up included, and the rate the command reports
itself (files / time after start-up). Each run uses a fresh data directory.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import PYTHON, ROOT, free_port, make_corpus, peak_rss_mb, stop, summarize, wait_port

CLI = [PYTHON, "-m", "appliance"]


def init(data: Path) -> None:
    pw = data.parent / "pw"
    pw.write_text("bench-password-123")
    subprocess.run(CLI + ["init", "--data", str(data), "--admin-password-file", str(pw)], check=True,
                   capture_output=True, cwd=ROOT)


def env_for(workers: int, **extra) -> dict:
    env = dict(os.environ, PACS_STORAGE_RESERVE_MB="64", PACS_INBOX_WORKERS=str(workers), PACS_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def run_cli(corpus: Path, work: Path, workers: int) -> tuple[float, float]:
    data = work / "data"
    init(data)
    start = time.monotonic()
    done = subprocess.run(CLI + ["import", "--data", str(data), str(corpus)], capture_output=True, text=True,
                          env=env_for(workers), cwd=ROOT)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"import failed:\n{done.stdout}\n{done.stderr}")
    reported = float(re.search(r"\(([\d.]+) files/s\)", done.stdout).group(1))
    return wall, reported


def files_left(inbox: Path) -> int:
    n = 0
    for dirpath, dirs, files in os.walk(inbox):
        if Path(dirpath) == inbox:
            dirs[:] = [d for d in dirs if d not in ("failed", "processed")]
        n += len(files)
    return n


def run_inbox(corpus: Path, work: Path, workers: int) -> tuple[float, float | None]:
    data = work / "data"
    init(data)
    staged = data / "staged"
    shutil.copytree(corpus, staged)
    dicom_port, http_port = free_port(), free_port()
    env = env_for(workers, PACS_DICOM_HOST="127.0.0.1", PACS_DICOM_PORT=str(dicom_port),
                  PACS_HTTP_HOST="127.0.0.1", PACS_HTTP_PORT=str(http_port))
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen(CLI + ["serve", "--data", str(data)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    try:
        wait_port(proc, http_port, "the appliance")
        time.sleep(1.0)  # let start-up settle
        inbox = data / "inbox"
        start = time.monotonic()
        os.rename(staged, inbox / "dropped")
        while files_left(inbox):
            if proc.poll() is not None:
                raise RuntimeError(f"the appliance exited; see {work / 'serve.log'}")
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        if any((inbox / "failed").rglob("*")):
            raise RuntimeError("some files failed; see inbox/failed")
        return elapsed, peak_rss_mb(proc.pid)
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", default="2,4", help="comma-separated worker counts to compare")
    ap.add_argument("--files", type=int, default=2000, help="corpus size (a multiple of 100)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pacs-import-bench")
    args = ap.parse_args()

    corpus = args.workdir / f"corpus-{args.files}"
    n = len(make_corpus(corpus, studies=args.files // 100))
    size_mb = sum(p.stat().st_size for p in corpus.rglob("*.dcm")) / 1e6
    print(f"corpus: {n} files, {size_mb:.0f} MB, in {args.files // 100} studies")
    print("| path | workers | instances/s, median (min-max) | notes |")
    print("|---|---|---|---|")
    for workers in [int(w) for w in args.workers.split(",")]:
        inbox_rates, rss, cli_wall, cli_self = [], [], [], []
        for run in range(args.runs):
            work = args.workdir / f"run-inbox-{workers}-{run}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            elapsed, peak = run_inbox(corpus, work, workers)
            inbox_rates.append(n / elapsed)
            if peak:
                rss.append(peak)
            shutil.rmtree(work, ignore_errors=True)

            work = args.workdir / f"run-cli-{workers}-{run}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            wall, reported = run_cli(corpus, work, workers)
            cli_wall.append(n / wall)
            cli_self.append(reported)
            shutil.rmtree(work, ignore_errors=True)
        rss_text = f"; server peak RSS {max(rss):.0f} MB" if rss else ""
        print(f"| inbox (drop to empty, incl. 2 s stability wait) | {workers} | {summarize(inbox_rates)} |{rss_text} |")
        print(f"| `pacs-appliance import` (wall, incl. start-up) | {workers} | {summarize(cli_wall)} | |")
        print(f"| `pacs-appliance import` (as it reports) | {workers} | {summarize(cli_self)} | |")


if __name__ == "__main__":
    main()
