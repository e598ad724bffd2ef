#!/usr/bin/env python3
"""Ingest benchmark: instances/s with dcmtk storescu into the appliance, a bare pynetdicom SCP and Orthanc.

One run of this script measures, for every receiver, each scenario ``--runs`` times
(fresh receiver process and empty storage each time, receivers interleaved so that
machine noise hits them alike) and prints medians (min-max):

* ``1 assoc``: one storescu (TCP_NODELAY=1) sending the whole corpus on one association;
* ``4 assoc``: four storescu processes (TCP_NODELAY=1) in parallel, a quarter of the corpus each;
* ``nagle``: one plain storescu (Nagle left on) sending the first ``--nagle-files`` files;
* ``peak RSS``: VmHWM of the receiver process after the 1-association ingest (plus its child
  processes', e.g. ingest workers: the sum of their peaks);
* ``peak PSS``: the highest sum of the PSS (/proc/PID/smaps_rollup) of the receiver process and its child
  processes, sampled every PSS_INTERVAL s during each send (a lower bound of the true peak). PSS shares
  each page among the processes mapping it, so unlike summed RSS it does not count the interpreter,
  libraries and pages a worker shares with the others several times.

Server CPU is that of the receiver process and its live child processes (ingest workers), and
"cores used" is that CPU time over the wall time of the send.

    .venv/bin/python bench/run_ingest.py [--runs 3] [--receivers appliance,bare,orthanc] [--json out.json]
    .venv/bin/python bench/run_ingest.py --receivers appliance,appliance-base --baseline-root ../old-checkout
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CALLING_AE, cpu_seconds, make_corpus, peak_rss_mb, sender_env, summarize, summarize_ms  # noqa: E402
from receivers import Appliance, BareScp, Orthanc  # noqa: E402


def _children(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.update(int(c) for c in task.read_text().split())
        except (OSError, ValueError):
            pass
    return children


def _tree_sum(pid: int, measure) -> float | None:
    """``measure(pid)`` plus the same of its live child processes (an appliance's ingest workers), recursively;
    None when ``pid`` is gone."""
    own = measure(pid)
    if own is None:
        return None
    return own + sum(_tree_sum(c, measure) or 0.0 for c in _children(pid))


def pss_mb(pid: int) -> float | None:
    """PSS of a live process (/proc/PID/smaps_rollup): its resident pages, shared ones split among sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration, ValueError):
        return None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid`` and of its live child processes."""
    return _tree_sum(pid, cpu_seconds)


def tree_peak_rss_mb(pid: int) -> float | None:
    """The sum of the peak RSS of ``pid`` and its live child processes (an upper bound of their peak together)."""
    return _tree_sum(pid, peak_rss_mb)


def tree_pss_mb(pid: int) -> float | None:
    """The PSS of ``pid`` plus that of its live child processes."""
    return _tree_sum(pid, pss_mb)


PSS_INTERVAL = 0.2


class PeakPss:
    """The highest ``tree_pss_mb`` seen every PSS_INTERVAL s while the block runs."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            value = tree_pss_mb(self.pid)
            if value is not None:
                self.peak = max(self.peak or 0.0, value)
            if self._done.wait(PSS_INTERVAL):
                return

    def __enter__(self) -> "PeakPss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def _two_decimals(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def send(receiver, files: list[Path], nodelay: bool, parallel: int = 1) -> float:
    """Send ``files`` with ``parallel`` storescu processes; return the wall time in seconds."""
    groups = [files[i::parallel] for i in range(parallel)] if parallel > 1 else [files]
    cmd = ["storescu", "-aet", CALLING_AE, "-aec", receiver.ae_title, "127.0.0.1", str(receiver.port)]
    env = sender_env(nodelay)
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd + [str(p) for p in g], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for g in groups]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    elapsed = time.perf_counter() - started
    for p, out in zip(procs, outputs):
        errors = [line for line in out.splitlines() if line.startswith(("E:", "F:"))]
        if p.returncode != 0 or errors:
            raise RuntimeError(f"storescu into {receiver.name} failed (rc {p.returncode}): {errors[:5]}")
    return elapsed


def make_receivers(names: list[str], workdir: Path, baseline_root: Path | None = None,
                   variants: dict[str, Path] | None = None) -> list:
    factories = {"appliance": lambda: Appliance(workdir), "bare": lambda: BareScp(workdir),
                 "appliance-base": lambda: Appliance(workdir, name="appliance-base", root=baseline_root),
                 "bare-tuned": lambda: BareScp(workdir, tune=True), "orthanc": lambda: Orthanc(workdir)}
    for name, root in (variants or {}).items():
        factories[name] = lambda name=name, root=root: Appliance(workdir, name=name, root=root)
    unknown = set(names) - set(factories)
    if unknown:
        raise SystemExit(f"unknown receiver(s) {sorted(unknown)}; choose from {sorted(factories)}")
    return [factories[n]() for n in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--receivers", default="appliance,bare,orthanc")
    p.add_argument("--scenarios", default="1,4,nagle")
    p.add_argument("--nagle-files", type=int, default=200)
    p.add_argument("--limit", type=int, help="send only the first N files of the corpus (quick comparisons)")
    p.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench-corpus")
    p.add_argument("--workdir", type=Path, help="keep receiver data here (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--baseline-root", type=Path,
                   help="a checkout of an older commit (git worktree): adds receiver appliance-base run from it")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                   help="another checkout run as receiver NAME (repeatable; name it in --receivers too)")
    p.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE",
                   help="an environment variable (a setting) for receiver NAME only, e.g. "
                        "appliance-w2:PACS_DICOM_INGEST_WORKERS=2 with --variant appliance-w2=. (repeatable)")
    args = p.parse_args()
    extra_env: dict[str, dict[str, str]] = defaultdict(dict)
    for spec in args.env:
        name, _, assignment = spec.partition(":")
        var, _, value = assignment.partition("=")
        if not name or not var:
            raise SystemExit(f"--env {spec!r}: expected NAME:VAR=VALUE")
        extra_env[name][var] = value
    variants = {}
    for spec in args.variant:
        name, _, root = spec.partition("=")
        if not name or not root:
            raise SystemExit(f"--variant {spec!r}: expected NAME=DIR")
        variants[name] = Path(root).resolve()
    if "appliance-base" in args.receivers.split(",") and not args.baseline_root:
        raise SystemExit("receiver appliance-base needs --baseline-root DIR")

    files = make_corpus(args.corpus)
    if args.limit:
        files = files[: args.limit]
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    scenarios = args.scenarios.split(",")
    tmp = tempfile.TemporaryDirectory(prefix="pacs-bench-")
    workdir = args.workdir or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    receivers = make_receivers(args.receivers.split(","), workdir,
                               args.baseline_root.resolve() if args.baseline_root else None, variants)
    for r in receivers:
        if r.name in extra_env:
            r.extra_env.update(extra_env[r.name])
    print(f"corpus: {len(files)} instances, {size_mb:.0f} MB; {platform.node()} {platform.processor() or ''}"
          f" cores={__import__('os').cpu_count()}; runs={args.runs}; load average {load_average()}", flush=True)

    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    rss: dict[tuple[str, str], list[float]] = defaultdict(list)
    pss: dict[tuple[str, str], list[float]] = defaultdict(list)  # peak summed PSS (PeakPss)
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)  # server CPU ms per instance (with its workers)
    cores: dict[tuple[str, str], list[float]] = defaultdict(list)  # server CPU seconds / wall seconds
    main_cpu: dict[tuple[str, str], list[float]] = defaultdict(list)  # CPU ms per instance of the main process
    for run in range(args.runs):
        for scenario in scenarios:
            for r in receivers:
                batch = files[: args.nagle_files] if scenario == "nagle" else files
                r.start(f"{run}-{scenario}")
                try:
                    cpu_before = tree_cpu_seconds(r.proc.pid) or 0.0
                    main_before = cpu_seconds(r.proc.pid) or 0.0
                    with PeakPss(r.proc.pid) as sampled:
                        seconds = send(r, batch, nodelay=scenario != "nagle",
                                       parallel=4 if scenario == "4" else 1)
                    hwm = tree_peak_rss_mb(r.proc.pid)
                    cpu_s = (tree_cpu_seconds(r.proc.pid) or 0.0) - cpu_before
                    main_ms = ((cpu_seconds(r.proc.pid) or 0.0) - main_before) * 1000 / len(batch)
                    cpu_ms = cpu_s * 1000 / len(batch)
                finally:
                    r.stop()
                rates[(r.name, scenario)].append(len(batch) / seconds)
                cpu[(r.name, scenario)].append(cpu_ms)
                cores[(r.name, scenario)].append(cpu_s / seconds)
                main_cpu[(r.name, scenario)].append(main_ms)
                if hwm is not None and scenario != "nagle":
                    rss[(r.name, scenario)].append(hwm)
                if sampled.peak is not None and scenario != "nagle":
                    pss[(r.name, scenario)].append(sampled.peak)
                print(f"run {run + 1} {r.name:22s} {scenario:>5s}: {len(batch) / seconds:7.1f} inst/s"
                      f"  peak RSS {hwm or 0:5.0f} MB  PSS {sampled.peak or 0:5.0f} MB  server CPU {cpu_ms:5.2f} ms/instance (main process {main_ms:5.2f};"
                      f" {cpu_s / seconds:4.2f} cores)"
                      f"  load {load_average()}", flush=True)

    names = {"1": "1 assoc (NODELAY)", "4": "4 assoc (NODELAY)", "nagle": f"Nagle on ({args.nagle_files} files)"}
    print(f"\nmedian (min-max) over {args.runs} runs, instances/s")
    print("| receiver | " + " | ".join(names[s] for s in scenarios) + " | peak RSS MB (1 / 4 assoc) | peak PSS MB (1 / 4 assoc) |")
    print("|---|" + "---|" * (len(scenarios) + 2))
    for r in receivers:
        cells = [summarize(rates[(r.name, s)]) for s in scenarios]
        cells.append(" / ".join(summarize(rss[(r.name, s)]) for s in scenarios if s != "nagle"))
        cells.append(" / ".join(summarize(pss[(r.name, s)]) for s in scenarios if s != "nagle"))
        print(f"| {r.name} | " + " | ".join(cells) + " |")
    print("\nserver CPU time per instance, ms, median (min-max)")
    print("| receiver | " + " | ".join(names[s] for s in scenarios) + " |")
    print("|---|" + "---|" * len(scenarios))
    for r in receivers:
        print(f"| {r.name} | " + " | ".join(summarize_ms(cpu[(r.name, s)]) for s in scenarios) + " |")
    print("\nCPU time per instance of the main process alone (without ingest workers), ms, median (min-max)")
    print("| receiver | " + " | ".join(names[s] for s in scenarios) + " |")
    print("|---|" + "---|" * len(scenarios))
    for r in receivers:
        print(f"| {r.name} | " + " | ".join(summarize_ms(main_cpu[(r.name, s)]) for s in scenarios) + " |")
    print("\ncores used (server CPU seconds / wall seconds), median (min-max)")
    print("| receiver | " + " | ".join(names[s] for s in scenarios) + " |")
    print("|---|" + "---|" * len(scenarios))
    for r in receivers:
        print(f"| {r.name} | " + " | ".join(_two_decimals(cores[(r.name, s)]) for s in scenarios) + " |")
    print(f"load average at the end: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"rates": {f"{k[0]}|{k[1]}": v for k, v in rates.items()},
                                         "rss_mb": {f"{k[0]}|{k[1]}": v for k, v in rss.items()},
                                         "pss_mb": {f"{k[0]}|{k[1]}": v for k, v in pss.items()},
                                         "cpu_ms": {f"{k[0]}|{k[1]}": v for k, v in cpu.items()},
                                         "cores": {f"{k[0]}|{k[1]}": v for k, v in cores.items()},
                                         "main_cpu_ms": {f"{k[0]}|{k[1]}": v for k, v in main_cpu.items()}}, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
