#!/usr/bin/env python3
"""Peak RSS and wall time of backup runs of a big box to a folder target, this tree against a baseline tree.

Boxes come from bench/scale_build.py (N instances, a real small sealed object for each). For each box and
repetition, interleaved per tree: a new empty folder target, then ``pacs-appliance backup run`` four times (the first
copies everything; the next three, with nothing new, are the listing-heavy ones), then ``backup verify`` of the target;
each a separate process whose peak RSS is read from wait4(). Each target is its own URL, so each tree starts with
no offsite state for it (the box's index keeps the rows of earlier targets, harmlessly).

    nice -n 10 .venv/bin/python bench/scale_build.py --instances 300000 --work /work/scratch-backup
    nice -n 10 .venv/bin/python bench/backup_scale.py --baseline-root /work/wt/backup-base \\
        --box /work/scratch-backup/box-100k --box /work/scratch-backup/box-300k --reps 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT  # noqa: E402

STEPS = ("full", "again", "again", "again", "verify")  # medians over the repeated no-change runs


def measure(root: Path, box: Path, target: Path, step: str) -> tuple[float, float]:
    """(peak RSS MB, wall s) of one CLI run under ``root``'s code."""
    args = ["backup", "run", "--data", str(box)] if step != "verify" else [
        "backup", "verify", "--data", str(box), "--target", target.as_uri()]
    env = dict(os.environ, PYTHONPATH=str(root), PACS_BACKUP_TARGET=target.as_uri())
    started = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-m", "appliance", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{root} {step} failed:\n{out.decode()[-2000:]}")
    return usage.ru_maxrss / 1024, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--box", type=Path, action="append", required=True)
    p.add_argument("--baseline-root", type=Path, required=True, help="a worktree of main")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--trees", default="main,branch", help="which of main,branch to run")
    p.add_argument("--work", type=Path, default=Path("/work/scratch-backup"))
    a = p.parse_args()
    roots = {k: v for k, v in {"main": a.baseline_root, "branch": ROOT}.items() if k in a.trees.split(",")}
    got: dict = {}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for box in a.box:
        for rep in range(a.reps):
            for label, root in roots.items():
                target = a.work / f"target-{box.name}-{label}-{rep}-{int(time.time())}"  # a new URL: no state
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for step in STEPS:
                    rss, wall = measure(root, box, target, step)
                    got.setdefault((box.name, label, step), []).append((rss, wall))
                    print(f"{box.name} rep {rep} {label:6} {step:6} peak RSS {rss:6.0f} MB  {wall:6.1f} s  "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                shutil.rmtree(target, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")
    print("\n| box | run | main: peak RSS MB | branch: peak RSS MB | main: s | branch: s |\n|---|---|---|---|---|---|")
    for box in a.box:
        for step in dict.fromkeys(STEPS):
            cells = []
            for what in (0, 1):
                for label in ("main", "branch"):
                    vals = [v[what] for v in got.get((box.name, label, step), [])]
                    cells.append(f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})" if vals else "-")
            print(f"| {box.name} | {step} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")


if __name__ == "__main__":
    main()
