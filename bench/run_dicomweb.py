#!/usr/bin/env python3
"""DICOMweb benchmark, the appliance side by side with Orthanc 1.10 + its DICOMweb plugin, in one run.

1. QIDO-RS study search on 10,000 studies / 100,000 instances: the appliance's index is
   written with bench/synthindex.py (as run_find.py does); Orthanc gets the same patients,
   studies, series and instances as header-only DICOM objects over its REST API (a few
   minutes; cached in --cache). The three queries of synthindex.queries, ``--runs`` times
   each over one keep-alive HTTP session; median (min-max) ms.
2. Time to the first rendered frame (``.../frames/1/rendered``, image/jpeg) of a 512x512
   CT and a 2,000x2,000 DX, each request on an instance not yet rendered (cold caches).
3. WADO-RS frame throughput on a 120-frame JPEG baseline ultrasound cine: every frame
   fetched one by one, as a viewer scrolling through it does, as stored (image/jpeg),
   decoded (application/octet-stream) and with OHIF v3's Accept (octet-stream, transfer-syntax=*,
   which the box answers with the stored bitstream); frames per second and bytes per frame.
4. (appliance only) DICOM ingest rate alone and while viewers keep the renderer busy,
   with 1 and 2 rendering threads.

    .venv/bin/python bench/run_dicomweb.py [--runs 11] [--cache /tmp/pacs-bench] [--skip-qido] [--skip-rendered]

Before/after a change of the appliance's own code (e.g. its HTTP server): ``--no-orthanc`` leaves
Orthanc out and ``--appliance-root DIR`` runs the appliance from another checkout (``git
archive <commit> | tar -x -C DIR``); run old and new alternately in one sitting.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import requests  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

import synthindex  # noqa: E402
from common import PYTHON, ROOT, free_port, stop, summarize_ms, wait_idle, wait_port  # noqa: E402

PASSWORD = "bench-admin-password"
ORTHANC = "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DCM = 'multipart/related; type="application/dicom"'


# -- the two servers ---------------------------------------------------------------
def init_box(data: Path) -> None:
    pw = data.parent / "admin.pw"
    pw.write_text(PASSWORD)
    subprocess.run([PYTHON, "-m", "appliance", "init", "--data", str(data), "--admin-password-file", str(pw)],
                   check=True, capture_output=True, cwd=ROOT)


APPLIANCE_ROOT = [ROOT]  # the checkout the appliance runs from (--appliance-root)
WITH_ORTHANC = [True]  # --no-orthanc clears it
WITH_RENDERED = [True]  # --skip-rendered clears it (only the cine's frames of part 3)


def start_box(data: Path, dicom_port: int = 0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    root = APPLIANCE_ROOT[0]
    env = dict(os.environ, PACS_DICOM_HOST="127.0.0.1", PACS_DICOM_PORT=str(dicom_port or free_port()),
               PACS_HTTP_HOST="127.0.0.1", PYTHONPATH=str(root),
               PACS_HTTP_PORT=str(port), PACS_STORAGE_RESERVE_MB="16", PACS_LOG_LEVEL="WARNING")
    log = open(data.parent / f"{data.name}-serve.log", "ab")
    proc = subprocess.Popen([PYTHON, "-m", "appliance", "serve", "--data", str(data)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=root)
    wait_port(proc, port, "pacs-appliance serve")
    wait_idle(proc.pid)
    return proc, f"http://127.0.0.1:{port}/dicomweb"


def start_orthanc(root: Path) -> tuple[subprocess.Popen | None, str]:
    if not WITH_ORTHANC[0]:
        return None, ""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"Name": "BENCH", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
              "Plugins": [PLUGIN], "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomServerEnabled": False, "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
              "HttpThreadsCount": 8, "LimitFindResults": 0}
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "ab")
    proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    wait_port(proc, port, "Orthanc")
    return proc, f"http://127.0.0.1:{port}"


def part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def stow(session: requests.Session, dicomweb: str, datasets: list[Dataset]) -> None:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10(d) + b"\r\n"
                    for d in datasets) + f"--{boundary}--\r\n".encode()
    r = session.post(f"{dicomweb}/studies", data=body,
                     headers={"Content-Type": f"{DCM}; boundary={boundary}"})
    r.raise_for_status()


# -- 1. QIDO on 100,000 instances ------------------------------------------------------
def header_only(studies: int, s: int) -> list[Dataset]:
    """Study ``s`` of synthindex's shape as DICOM objects without pixel data (for Orthanc)."""
    modality, sop_class = synthindex.MODALITIES[s % len(synthindex.MODALITIES)]
    p = s // 2
    families, given = synthindex.FAMILIES, synthindex.GIVEN
    out = []
    for k in range(2):
        for i in range(5):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = sop_class
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{synthindex.ROOT}.1.{s}.{k + 1}.{i + 1}"
            ds.StudyInstanceUID = f"{synthindex.ROOT}.1.{s}"
            ds.SeriesInstanceUID = f"{synthindex.ROOT}.1.{s}.{k + 1}"
            ds.PatientID = synthindex.patient_id(p)
            ds.PatientName = f"{families[p % len(families)]}^{given[(p // len(families)) % len(given)]}"
            ds.StudyDate = synthindex.study_date(s)
            ds.StudyTime = "101500"
            ds.AccessionNumber = f"ACC{s:07d}"
            ds.StudyDescription = f"{modality} EXAM"
            ds.Modality = modality
            ds.SeriesNumber = k + 1
            ds.InstanceNumber = i + 1
            out.append(ds)
    return out


def fill_orthanc(url: str, studies: int) -> None:
    session = requests.Session()

    def send(s: int) -> None:
        for ds in header_only(studies, s):
            session.post(f"{url}/instances", data=part10(ds)).raise_for_status()

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for n, _ in enumerate(pool.map(send, range(studies)), 1):
            if n % 1000 == 0:
                print(f"  orthanc: {n * 10:,} instances in {time.perf_counter() - started:.0f} s", flush=True)


def bench_qido(cache: Path, runs: int, studies: int) -> list[str]:
    box_data = cache / f"dicomweb-box-{studies}"
    if not (box_data / ".bench-complete").exists():
        shutil.rmtree(box_data, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        init_box(box_data)
        os.environ.setdefault("PACS_STORAGE_RESERVE_MB", "16")
        from appliance.app import build
        from appliance.config import load

        app = build(load(box_data), with_web=False)
        synthindex.build(app.index.db, studies=studies)
        app.index.close()
        (box_data / ".bench-complete").write_text("ok")
    orthanc_root = cache / f"dicomweb-orthanc-{studies}"
    box, box_url = start_box(box_data)
    orthanc, orthanc_url = start_orthanc(orthanc_root)
    try:
        if orthanc and not (orthanc_root / ".bench-complete").exists():
            print(f"filling Orthanc with {studies * 10:,} instances (once; cached in {orthanc_root})", flush=True)
            fill_orthanc(orthanc_url, studies)
            (orthanc_root / ".bench-complete").write_text("ok")
        rows = [f"QIDO-RS study search, {studies:,} studies / {studies * 10:,} instances, {runs} runs, ms",
                "| query | appliance | Orthanc + DICOMweb | matches |", "|---|---|---|---|"]
        box_s = requests.Session()
        box_s.auth = ("admin", PASSWORD)
        orthanc_s = requests.Session()
        for label, keys, expected in synthindex.queries(studies):
            servers = [("box", box_s, box_url), ("orthanc", orthanc_s, f"{orthanc_url}/dicom-web")]
            times = {"orthanc": []}
            for name, session, base in servers[:2 if orthanc else 1]:
                params = dict(keys, limit="1000")
                session.get(f"{base}/studies", params=params).raise_for_status()  # warm-up
                t = []
                for _ in range(runs):
                    started = time.perf_counter()
                    r = session.get(f"{base}/studies", params=params, headers={"Accept": "application/dicom+json"})
                    t.append((time.perf_counter() - started) * 1000)
                    r.raise_for_status()
                got = len(r.json())
                if got != expected:
                    print(f"  warning: {name} {label}: {got} matches, expected {expected}")
                times[name] = t
            rows.append(f"| {label} | {summarize_ms(times['box'])} | {summarize_ms(times['orthanc'])} | {expected} |")
        return rows
    finally:
        stop(box)
        stop(orthanc)


# -- 2 and 3. rendering and frames ----------------------------------------------------------
def synthetic_image(rows: int, cols: int, modality: str, photometric: str) -> Dataset:
    """A grayscale 16-bit image of the given size, from CT_small's pixels scaled up, with fresh UIDs."""
    from tests import synth

    ds = synth.make_instance("CT", patient_id="BENCHRENDER")
    small = ds.pixel_array.astype(np.float64)
    ys = (np.arange(rows) * small.shape[0] / rows).astype(int)
    xs = (np.arange(cols) * small.shape[1] / cols).astype(int)
    big = small[ys][:, xs].astype(np.int16)
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = big.tobytes()
    ds.Modality = modality
    ds.PhotometricInterpretation = photometric
    return ds


def cine_120() -> Dataset:
    """120 JPEG baseline YBR_FULL_422 frames (the bundled 30-frame ultrasound, four times over)."""
    from tests import synth

    ds = synth.make_instance("US_CINE_JPEG", patient_id="BENCHCINE")
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    ds.PixelData = encapsulate(frames * 4)
    ds.NumberOfFrames = len(frames) * 4
    return ds


def copies(ds: Dataset, n: int) -> list[Dataset]:
    out = []
    for _ in range(n):
        c = copy.deepcopy(ds)
        c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        c.file_meta.MediaStorageSOPInstanceUID = c.SOPInstanceUID
        out.append(c)
    return out


def instance_path(ds: Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def bench_rendered(targets: dict, orthanc_s, orthanc_url: str, runs: int) -> list[str]:
    rows = []
    box_s, box_url = targets["box"]
    for label, image in (("CT 512x512 16-bit", synthetic_image(512, 512, "CT", "MONOCHROME2")),
                         ("DX 2000x2000 16-bit", synthetic_image(2000, 2000, "DX", "MONOCHROME1"))):
        instances = copies(image, runs)
        for ds in instances:
            stow(box_s, box_url, [ds])
            if "orthanc" in targets:
                orthanc_s.post(f"{orthanc_url}/instances", data=part10(ds)).raise_for_status()
        times = {"orthanc": []}
        for name, (session, base) in targets.items():
            t = []
            for ds in instances:
                started = time.perf_counter()
                r = session.get(f"{base}{instance_path(ds)}/frames/1/rendered", headers={"Accept": "image/jpeg"})
                t.append((time.perf_counter() - started) * 1000)
                r.raise_for_status()
            times[name] = t
        rows.append(f"| {label} | {summarize_ms(times['box'])} | {summarize_ms(times['orthanc'])} |")
    return rows


# What OHIF v3's DICOMweb data source sends for every frame (imageRendering: 'wadors').
OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def bench_pixels(runs: int) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-dicomweb-"))
    box_data = tmp / "box"
    init_box(box_data)
    box, box_url = start_box(box_data)
    cpu_of = {"box": box.pid, "orthanc": None}
    orthanc, orthanc_url = start_orthanc(tmp / "orthanc")
    cpu_of["orthanc"] = orthanc.pid if orthanc else None
    try:
        box_s = requests.Session()
        box_s.auth = ("admin", PASSWORD)
        orthanc_s = requests.Session()
        targets = {"box": (box_s, box_url), "orthanc": (orthanc_s, f"{orthanc_url}/dicom-web")}
        if orthanc is None:
            del targets["orthanc"]
        rows = []
        if WITH_RENDERED[0]:
            rows += [f"\nTime to the first rendered frame (image/jpeg, cold: each run a new instance), {runs} runs, ms",
                     "| image | appliance | Orthanc + DICOMweb |", "|---|---|---|"]
            rows += bench_rendered(targets, orthanc_s, orthanc_url, runs)

        cine = cine_120()
        stow(box_s, box_url, [cine])
        if orthanc:
            orthanc_s.post(f"{orthanc_url}/instances", data=part10(cine)).raise_for_status()
        n = int(cine.NumberOfFrames)
        rows += [f"\nWADO-RS frames of a {n}-frame JPEG baseline ultrasound cine, fetched one by one, "
                 f"frames/s (median of {runs} passes; first pass cold), response bytes per frame and the "
                 "server's CPU time per frame (all passes; less sensitive to other load than frames/s)",
                 "| Accept | appliance frames/s | bytes/frame | CPU ms/frame | Orthanc + DICOMweb frames/s | "
                 "bytes/frame | CPU ms/frame |", "|---|---|---|---|---|---|---|"]
        for label, accept in (("as stored: image/jpeg", 'multipart/related; type="image/jpeg"; '
                               "transfer-syntax=1.2.840.10008.1.2.4.50"),
                              ("decoded: application/octet-stream", 'multipart/related; '
                               'type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'),
                              ("OHIF's: application/octet-stream, transfer-syntax=*", OHIF_ACCEPT)):
            rates, sizes, cpu = {"orthanc": []}, {}, {}
            for name, (session, base) in targets.items():
                passes, total, cpu_before = [], 0, cpu_seconds(cpu_of[name])
                for _ in range(runs):
                    started, total = time.perf_counter(), 0
                    for f in range(1, n + 1):
                        r = session.get(f"{base}{instance_path(cine)}/frames/{f}", headers={"Accept": accept})
                        r.raise_for_status()
                        total += len(r.content)
                    passes.append(n / (time.perf_counter() - started))
                rates[name], sizes[name] = passes, f"{total / n / 1024:.1f} KiB"
                cpu[name] = f"{(cpu_seconds(cpu_of[name]) - cpu_before) * 1000 / (n * runs):.2f}"
            rows.append(f"| {label} | {_rate(rates['box'])} | {sizes['box']} | {cpu['box']} | "
                        f"{_rate(rates['orthanc'])} | {sizes.get('orthanc', '-')} | {cpu.get('orthanc', '-')} |")
        return rows
    finally:
        stop(box)
        stop(orthanc)
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rate(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})" if values else "-"


# -- 4. DICOM ingest while viewers render ---------------------------------------------------
def bench_ingest_under_render(render_threads: int, clients: int = 6) -> str:
    """storescu of 200 CT instances alone, then while ``clients`` keep asking for uncached renders of DXs."""
    import threading

    from tests import synth

    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-ivr-"))
    data = tmp / "box"
    init_box(data)
    dicom_port = free_port()
    os.environ["PACS_DICOMWEB_RENDER_THREADS"] = str(render_threads)
    proc, url = start_box(data, dicom_port)
    try:
        session = requests.Session()
        session.auth = ("admin", PASSWORD)
        dx = copies(synthetic_image(2000, 2000, "DX", "MONOCHROME1"), 4)
        stow(session, url, dx)

        def ingest(name: str) -> float:
            files = synth.write_study(tmp / name, n_series=2, per_series=100, kind="CT")
            started = time.perf_counter()
            out = subprocess.run(["storescu", "-aec", "PACSBOX", "127.0.0.1", str(dicom_port), *map(str, files)],
                                 capture_output=True, env=dict(os.environ, TCP_NODELAY="1"))
            if out.returncode:
                raise RuntimeError(out.stderr[-300:])
            return len(files) / (time.perf_counter() - started)

        alone = [ingest("a"), ingest("b")]
        stop_event, rendered = threading.Event(), [0]

        def viewer(k: int) -> None:
            s = requests.Session()
            s.auth = session.auth
            n = 0
            while not stop_event.is_set():
                n += 1  # a new window each time: never a cache hit
                s.get(f"{url}{instance_path(dx[k % 4])}/rendered", params={"window": f"{n},{400 + n}"})
                rendered[0] += 1

        threads = [threading.Thread(target=viewer, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        time.sleep(1)
        started, before = time.perf_counter(), rendered[0]
        busy = [ingest("c"), ingest("d")]
        renders = (rendered[0] - before) / (time.perf_counter() - started)
        stop_event.set()
        for t in threads:
            t.join()
        return (f"| {render_threads} | {statistics.median(alone):.0f} | {statistics.median(busy):.0f} | "
                f"{renders:.1f} |")
    finally:
        stop(proc)
        os.environ.pop("PACS_DICOMWEB_RENDER_THREADS", None)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pacs-bench")
    parser.add_argument("--skip-qido", action="store_true")
    parser.add_argument("--skip-pixels", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-rendered", action="store_true", help="of part 2/3, only the cine's frames")
    parser.add_argument("--no-orthanc", action="store_true", help="the appliance alone")
    parser.add_argument("--appliance-root", type=Path, default=ROOT,
                        help="run the appliance from this checkout (before/after figures)")
    args = parser.parse_args()
    APPLIANCE_ROOT[0] = args.appliance_root.resolve()
    WITH_ORTHANC[0] = not args.no_orthanc
    WITH_RENDERED[0] = not args.skip_rendered
    rows: list[str] = []
    if not args.skip_qido:
        rows += bench_qido(args.cache, args.runs, args.studies)
    if not args.skip_pixels:
        rows += bench_pixels(args.runs)
    if not args.skip_ingest:
        rows += ["\nDICOM ingest (storescu, 200 CT instances, one association) alone and while 6 clients keep "
                 "asking for uncached renders of 2000x2000 DXs, inst/s",
                 "| [dicomweb] render_threads | ingest alone | ingest while rendering | renders/s |", "|---|---|---|---|"]
        rows += [bench_ingest_under_render(n) for n in (1, 2)]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
