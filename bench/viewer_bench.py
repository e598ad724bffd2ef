#!/usr/bin/env python3
"""The viewer in headless Chromium (Debian's, via Playwright) against a real `pacs-appliance serve`.

Measures, on one box running both the server and the browser:
  1. time to first image of a CT series of 100, 300 and 1,000 slices (512x512, 16-bit), from the
     start of navigation to the viewer's "pacs:first-image" performance mark (page, script, study,
     first image's attributes, first frame, window/level, draw);
  2. full-series scrollable time: to the "pacs:series-loaded" mark (every frame fetched and decoded);
  3. cine: a 120-frame ultrasound clip recorded at 30 fps (JPEG baseline): time from opening to
     every frame in hand, then frames shown per second over 4 s of play at 1x and 2x;
  4. one window/level repaint (LUT + draw) of a 2000x2500 16-bit image, median of 15.

Data are synthetic (tests/synth.py: pydicom's CT_small scaled to 512x512, the bundled YBR JPEG
clip repeated to 120 frames), sent with dcmtk storescu once per run of the script.

    .venv/bin/python bench/viewer_bench.py [--runs 3] [--sizes 100,300,1000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import synth  # noqa: E402
from helpers import ADMIN_PASSWORD, Server, chromium, dcmtk, init_data_dir, wait_until  # noqa: E402


def ct_series(directory: Path, slices: int, size: int = 512) -> str:
    """A CT series of ``slices`` 16-bit images; returns its study UID."""
    directory.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    base = synth.make_instance("CT")
    pixels = np.kron(base.pixel_array.astype(np.uint16), np.ones((size // base.Rows, size // base.Columns),
                                                                    dtype=np.uint16))
    for n in range(slices):
        ds = synth.make_instance("CT", patient_name=f"BENCH^CT{slices}", patient_id=f"BENCH{slices}",
                                 study_uid=study, series_uid=series, instance_number=n + 1,
                                 study_description=f"CT {slices} slices")
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.roll(pixels, n % size, axis=0).tobytes()  # each slice a little different
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(directory / f"{n:05d}.dcm", enforce_file_format=True)
    return study


def us_clip(path: Path, frames: int = 120) -> str:
    """The bundled 30-frame YBR JPEG clip repeated to ``frames`` frames at 30 fps."""
    ds = synth.make_instance("US_CINE_JPEG", patient_name="BENCH^CINE", patient_id="BENCHUS",
                             study_description="Cine bench")
    bitstreams = [b"".join(f) for f in generate_fragmented_frames(ds.PixelData, number_of_frames=30)]
    ds.PixelData = encapsulate([bitstreams[i % 30] for i in range(frames)])
    ds.NumberOfFrames = frames
    ds.FrameTime = 1000 / 30
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.StudyInstanceUID


def big_dx(path: Path) -> str:
    ds = synth.make_instance("CT", patient_name="BENCH^DX", patient_id="BENCHDX", modality="DX",
                             study_description="DX bench")
    rng = np.random.default_rng(1)
    ds.Rows, ds.Columns = 2500, 2000
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4096, (2500, 2000), dtype=np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return ds.StudyInstanceUID


def login(browser, base: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page


def mark(page, name: str) -> float | None:
    """Milliseconds from navigation start to the named performance mark, or None if not reached yet."""
    return page.evaluate(f"(() => {{ const m = performance.getEntriesByName({name!r}); "
                         "return m.length ? m[0].startTime : null; })()")


def open_and_time(browser, base: str, study: str, timeout: float = 300) -> tuple[float, float]:
    context, page = login(browser, base)
    try:
        page.goto(base + f"/view/{study}")
        first = wait_until(lambda: mark(page, "pacs:first-image"), timeout, interval=0.02, what="first image")
        loaded = wait_until(lambda: mark(page, "pacs:series-loaded"), timeout, interval=0.1, what="series loaded")
        return first, loaded
    finally:
        context.close()


def advanced(page) -> tuple[int, float]:
    """Frames the cine has advanced so far, and the page's clock at that moment."""
    return tuple(page.evaluate("""(() => [Number(document.querySelector('.vport').dataset.advanced || 0),
                                          performance.now()])()"""))


def cine(browser, base: str, study: str) -> dict:
    context, page = login(browser, base)
    try:
        page.goto(base + f"/view/{study}")
        ready = wait_until(lambda: mark(page, "pacs:series-loaded"), 120, interval=0.02, what="clip loaded")
        out = {"ready_ms": ready}
        for speed in ("1", "2"):
            page.select_option("[data-speed]", speed)
            page.click("[data-action=play]")
            # Rate over 4 s of steady play, timed in the page: click latency and start-up left out.
            time.sleep(0.5)
            a1, t1 = advanced(page)
            time.sleep(4)
            a2, t2 = advanced(page)
            page.click("[data-action=play]")
            out[f"fps_{speed}x"] = (a2 - a1) / ((t2 - t1) / 1000)
        return out
    finally:
        context.close()


def repaint(browser, base: str, study: str, runs: int = 15) -> list[float]:
    context, page = login(browser, base)
    try:
        page.goto(base + f"/view/{study}")
        wait_until(lambda: mark(page, "pacs:first-image"), 120, interval=0.05, what="DX drawn")
        return page.evaluate("""runs => {
            const p = window.pacsViewer.ports[0], out = [];
            for (let i = 0; i < runs; i++) {
                p.view.ww = 1000 + 100 * i; p.view.wc = 1500 + 20 * i;
                const t = performance.now(); p.paint(); p.draw(); out.push(performance.now() - t);
            }
            return out; }""", runs)
    finally:
        context.close()


def summary(values: list[float], digits: int = 0) -> str:
    f = f"{{:.{digits}f}}"
    return f"median {f.format(statistics.median(values))} (min {f.format(min(values))}, max {f.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="100,300,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="pacs-viewer-bench-") as tmp:
        tmp = Path(tmp)
        print("generating data ...", flush=True)
        studies = {n: ct_series(tmp / f"ct{n}", n) for n in sizes}
        clip = us_clip(tmp / "us" / "clip.dcm")
        dx = big_dx(tmp / "dx.dcm")
        server = Server(init_data_dir(tmp / "data")).start()
        try:
            print("storing ...", flush=True)
            for folder, extra in [*((tmp / f"ct{n}", []) for n in sizes), (tmp / "us", ["-xy"])]:
                sent = dcmtk("storescu", "+sd", *extra, "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, folder,
                             timeout=1800)
                assert sent.returncode == 0, sent.stderr[-2000:]
            sent = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, tmp / "dx.dcm")
            assert sent.returncode == 0, sent.stderr[-2000:]
            with chromium() as browser:
                for n in sizes:
                    firsts, loads = [], []
                    for _ in range(args.runs):
                        first, loaded = open_and_time(browser, server.url, studies[n])
                        firsts.append(first)
                        loads.append(loaded)
                    print(f"CT {n:>5} slices: first image {summary(firsts)} ms; "
                          f"whole series scrollable {summary(loads)} ms", flush=True)
                clips = [cine(browser, server.url, clip) for _ in range(args.runs)]
                print(f"cine 120 frames @30 fps: every frame in hand {summary([c['ready_ms'] for c in clips])} ms "
                      "after navigation start; shown "
                      + ", ".join(f"{s}: {summary([c['fps_' + s] for c in clips], 1)} fps" for s in ("1x", "2x")))
                paints = repaint(browser, server.url, dx)
                print(f"window/level repaint 2000x2500 16-bit: {summary(paints)} ms", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
