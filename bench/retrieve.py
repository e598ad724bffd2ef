"""C-MOVE and C-GET of one 100-instance study on loopback: the appliance beside Orthanc, same run.

Both archives get the same synthetic study (100 CT instances, 128x128, ~39 KB each,
explicit VR little endian) with dcmtk's storescu; then dcmtk's movescu (with its own
store SCP on --port) and getscu retrieve the whole study from each, ``--runs`` times,
alternating between the two. Times are the wall clock of the dcmtk process (start to
exit, including its association set-up); received data is not written to disk
(``--ignore``) so the disk does not blur the comparison.

    .venv/bin/python bench/retrieve.py --runs 7
"""
from __future__ import annotations

import argparse
import json
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
from helpers import CLI, Server, free_port, init_data_dir, port_open, wait_until  # noqa: E402

SCU = "BENCHSCU"


def run(*args: str, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)
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
    proc = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=log)
    wait_until(lambda: port_open(dicom_port) and port_open(http_port), 30, what="Orthanc")
    return proc, dicom_port, http_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--instances", type=int, default=100)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-retrieve-"))
    box = orthanc = None
    try:
        files = synth.write_study(tmp / "study", n_series=1, per_series=args.instances, patient_id="BENCHRET")
        study_uid = __import__("pydicom").dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        scu_port = free_port()
        data_dir = init_data_dir(tmp / "data")
        subprocess.run(CLI + ["modality", "add", "--data", str(data_dir), SCU, "127.0.0.1", str(scu_port)],
                       check=True, capture_output=True)
        box = Server(data_dir).start()
        orthanc, orthanc_port, _ = start_orthanc(tmp / "orthanc", scu_port)
        peers = {"appliance": ("PACSBOX", box.dicom_port), "orthanc": ("ORTHANC", orthanc_port)}
        for ae, port in peers.values():
            run("storescu", "-aet", SCU, "-aec", ae, "127.0.0.1", port, "+sd", tmp / "study")
        out = tmp / "out"
        out.mkdir()
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):
            for name, (ae, port) in peers.items():
                times.setdefault(("C-MOVE", name), []).append(run(
                    "movescu", "-S", "--ignore", "-aet", SCU, "-aec", ae, "-aem", SCU, "--port", scu_port, *keys,
                    "127.0.0.1", port, cwd=out))
                times.setdefault(("C-GET", name), []).append(run(
                    "getscu", "-S", "--ignore", "-aet", SCU, "-aec", ae, *keys, "127.0.0.1", port, cwd=out))
        print(f"{args.instances}-instance study, {args.runs} runs, median (min-max) seconds, dcmtk process wall time")
        print(f"| operation | appliance | Orthanc {orthanc_version()} |")
        print("|---|---|---|")
        for op in ("C-MOVE", "C-GET"):
            cells = []
            for name in ("appliance", "orthanc"):
                t = times[(op, name)]
                cells.append(f"{statistics.median(t):.2f} s ({min(t):.2f}-{max(t):.2f})")
            print(f"| {op} | {cells[0]} | {cells[1]} |")
    finally:
        if box is not None:
            box.kill()
        if orthanc is not None:
            orthanc.terminate()
            orthanc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


def orthanc_version() -> str:
    done = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True)
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].split()[-1] if first else ""


if __name__ == "__main__":
    main()
