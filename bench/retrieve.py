"""C-MOVE and C-GET of one 100-instance study on loopback: the appliance beside Orthanc, same run.

Both archives get the same synthetic study with dcmtk's storescu: by default ``--kind mixed``,
a CT, an MR and an ultrasound series in one study (CT_small 39 KB, MR_small 10 KB,
examples_rgb_color 232 KB, in turn; explicit VR little endian), or ``--kind CT`` for the older
all-CT figures. Then dcmtk's movescu (with its own store SCP on --port) and getscu retrieve the
whole study from each, ``--runs`` times, alternating between the two. Times are the wall clock of
the dcmtk process (start to exit, including its association set-up); received data is not
written to disk (``--ignore``) so the disk does not blur the comparison. ``C-GET-NONE`` (a getscu
whose query matches nothing) and ``C-ECHO`` (an echoscu) time what an association costs by itself,
so that a C-GET's time splits into its association and its sub-operations.

Every process runs with TCP_NODELAY=1 in its environment (dcmtk and Orthanc then disable
Nagle's algorithm): with Nagle on, Orthanc's retrieval stalls on delayed ACKs (about 100 ms per
instance), which is not the comparison a user makes.

    .venv/bin/python bench/retrieve.py --runs 7
    .venv/bin/python bench/retrieve.py --runs 5 --baseline-root ../base   # adds "appliance-base", run from
                                                    # another checkout (a git worktree of main), interleaved
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import synth  # noqa: E402
from common import cpu_seconds  # noqa: E402
from helpers import CLI, Server, free_port, init_data_dir, port_open, wait_until  # noqa: E402

SCU = "BENCHSCU"


NODELAY = {**os.environ, "TCP_NODELAY": "1"}
OPS = ("C-MOVE", "C-GET", "C-GET-NONE", "C-ECHO")


def run(*args: str, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=NODELAY)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def start_orthanc(root: Path, scu_port: int) -> tuple[subprocess.Popen, int, int]:
    dicom_port, http_port = free_port(), free_port()
    (root / "db").mkdir(parents=True)
    config = {
        "Name": "BENCH", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
        "DicomModalities": {SCU: [SCU, "127.0.0.1", scu_port]},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "wb")
    proc = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=log, env=NODELAY)
    wait_until(lambda: port_open(dicom_port) and port_open(http_port), 30, what="Orthanc")
    return proc, dicom_port, http_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--kind", default="mixed", help="mixed (CT, MR and US series in one study) or CT")
    parser.add_argument("--baseline-root", type=Path,
                        help="also retrieve from an appliance run from this checkout (before/after in one run)")
    parser.add_argument("--skip-orthanc", action="store_true", help="appliance(s) only (quick A/B runs)")
    parser.add_argument("--ops", default="C-MOVE,C-GET,C-GET-NONE,C-ECHO",
                        help="which to run (e.g. C-GET while profiling); C-GET-NONE is a getscu whose query "
                             "matches nothing and C-ECHO an echoscu: what an association costs by itself")
    args = parser.parse_args()
    ops = [op for op in OPS if op in args.ops.upper().split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-retrieve-"))
    box = base = orthanc = None
    try:
        files = write_retrieval_study(tmp / "study", args.instances, args.kind)
        study_uid = __import__("pydicom").dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        scu_port = free_port()
        data_dir = init_data_dir(tmp / "data")
        subprocess.run(CLI + ["modality", "add", "--data", str(data_dir), SCU, "127.0.0.1", str(scu_port)],
                       check=True, capture_output=True)
        if args.baseline_root:  # copied before either runs: a running box writes (and removes) snapshot files
            base_dir = tmp / "data-base"
            shutil.copytree(data_dir, base_dir, symlinks=True)  # the same keys and peers, its own index
        box = Server(data_dir, env=source_env(ROOT)).start()
        peers = {"appliance": ("PACSBOX", box.dicom_port)}
        pids = {"appliance": box.proc.pid}
        if args.baseline_root:
            base = Server(base_dir, env=source_env(args.baseline_root.resolve())).start()
            peers["appliance-base"] = ("PACSBOX", base.dicom_port)
            pids["appliance-base"] = base.proc.pid
        if not args.skip_orthanc:
            orthanc, orthanc_port, _ = start_orthanc(tmp / "orthanc", scu_port)
            peers["orthanc"] = ("ORTHANC", orthanc_port)
            pids["orthanc"] = orthanc.pid
        for ae, port in peers.values():
            run("storescu", "-aet", SCU, "-aec", ae, "127.0.0.1", port, "+sd", "+r", tmp / "study")
        out = tmp / "out"
        out.mkdir()
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
        no_match = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3.4.5.6.7.8.9"]
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}

        def timed(op: str, name: str, *command) -> None:
            before = cpu_seconds(pids[name])
            times.setdefault((op, name), []).append(run(*command, cwd=out))
            after = cpu_seconds(pids[name])
            if before is not None and after is not None:
                cpu.setdefault((op, name), []).append(after - before)

        load = os.getloadavg()
        for _ in range(args.runs):
            for name, (ae, port) in peers.items():
                if "C-MOVE" in ops:
                    timed("C-MOVE", name, "movescu", "-S", "--ignore", "-aet", SCU, "-aec", ae, "-aem", SCU,
                          "--port", scu_port, *keys, "127.0.0.1", port)
                if "C-GET" in ops:
                    timed("C-GET", name, "getscu", "-S", "--ignore", "-aet", SCU, "-aec", ae, *keys, "127.0.0.1", port)
                if "C-GET-NONE" in ops:
                    timed("C-GET-NONE", name, "getscu", "-S", "--ignore", "-aet", SCU, "-aec", ae, *no_match,
                          "127.0.0.1", port)
                if "C-ECHO" in ops:
                    timed("C-ECHO", name, "echoscu", "-aet", SCU, "-aec", ae, "127.0.0.1", port)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{args.instances}-instance {args.kind} study ({size_mb:.1f} MB), {args.runs} runs, median (min-max), dcmtk process wall time")
        print("| operation | " + " | ".join(f"Orthanc {orthanc_version()}" if n == "orthanc" else n for n in peers)
              + " |")
        print("|---|" + "---|" * len(peers))
        for op in ops:
            cells = []
            for name in peers:
                t = times[(op, name)]
                cells.append(f"{statistics.median(t) * 1000:.0f} ms ({min(t) * 1000:.0f}-{max(t) * 1000:.0f})")
            print(f"| {op} | " + " | ".join(cells) + " |")
        for op in ops:  # the server's own CPU time (all threads) per operation
            cells = [f"{statistics.mean(cpu[(op, name)]) * 1000:.0f} / {statistics.median(cpu[(op, name)]) * 1000:.0f} ms"
                     if cpu.get((op, name)) else "-" for name in peers]
            print(f"| {op}, server CPU (mean / median) | " + " | ".join(cells) + " |")
        print(f"load average: {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    finally:
        for server in (box, base):
            if server is not None:
                server.kill()
        if orthanc is not None:
            orthanc.terminate()
            orthanc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


def source_env(root: Path) -> dict:
    """Run the appliance from the checkout at ``root``. PYTHONSAFEPATH: ``python -m appliance`` would
    otherwise put the working directory first on sys.path, and a baseline started from this checkout
    would import this checkout's code, not its own."""
    env = {"PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"}
    done = subprocess.run([sys.executable, "-c", "import appliance; print(appliance.__file__)"],
                          env={**os.environ, **env}, capture_output=True, text=True, check=True)
    if not done.stdout.strip().startswith(str(root)):
        raise SystemExit(f"{root} is not what the appliance would import: {done.stdout.strip()}")
    return env


def write_retrieval_study(directory: Path, instances: int, kind: str) -> list[Path]:
    """One study of ``instances`` instances: one series of ``kind``, or for "mixed" CT, MR and US series."""
    from pydicom.uid import generate_uid

    if kind != "mixed":
        return synth.write_study(directory, n_series=1, per_series=instances, kind=kind, patient_id="BENCHRET")
    study_uid = generate_uid()
    kinds = ("CT", "MR", "US")
    files: list[Path] = []
    for i, k in enumerate(kinds):
        count = instances // len(kinds) + (1 if i < instances % len(kinds) else 0)
        files += synth.write_study(directory / k, n_series=1, per_series=count, kind=k, patient_id="BENCHRET",
                                   study_uid=study_uid)
    return files


def orthanc_version() -> str:
    done = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True)
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].split()[-1] if first else ""


if __name__ == "__main__":
    main()
