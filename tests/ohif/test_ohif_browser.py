"""The real OHIF (the pinned @ohif/app release build) served by the box at /ohif, in Chromium.

Signed in to the box, OHIF lists the stored studies, opens a CT, a JPEG ultrasound cine and a
JPEG 2000 MR and draws them, and no request it makes is answered with an error. The cine's frames go out as the
stored JPEG bitstreams (OHIF asks for transfer-syntax=*), which OHIF decodes itself.
"""
from __future__ import annotations

import io

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image

import ohif_tarball
import synth
from helpers import ADMIN_PASSWORD, Server, chromium, dcmtk, init_data_dir, run_cli, wait_until

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture(scope="module")
def ohif_box(tmp_path_factory):
    try:
        tarball = ohif_tarball.tarball()
    except ohif_tarball.Unavailable as exc:
        pytest.fail(f"the real-OHIF test needs @ohif/app@{ohif_tarball.VERSION}: {exc}")
    root = tmp_path_factory.mktemp("ohif")
    data = init_data_dir(root / "data")
    run_cli("ohif", "install", str(tarball), "--data", str(data))
    files = root / "files"
    ct = synth.write_study(files / "ct", n_series=1, per_series=3, kind="CT", patient_name="OHIF^CHEST",
                           patient_id="OHIFCT1", study_description="Chest CT")
    cine = synth.make_instance("US_CINE_JPEG", patient_name="OHIF^SONO", patient_id="OHIFUS1",
                               study_description="Abdomen US")
    cine_path = files / "cine.dcm"
    cine.save_as(cine_path, enforce_file_format=True)
    server = Server(data).start()
    for args in ((*ct,), ("-xy", cine_path)):
        sent = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *args)
        assert sent.returncode == 0, sent.stderr
    # A JPEG 2000 image too: its decoder (WebAssembly with Emscripten glue) needs the /ohif CSP as it is.
    j2k = synth.make_instance("MR_J2K", patient_name="OHIF^MR", patient_id="OHIFMR1")
    http = requests.Session()
    http.auth = ("admin", ADMIN_PASSWORD)
    DICOMwebClient(url=f"{server.url}/dicomweb", session=http).store_instances([j2k])
    yield {"server": server, "ct": synth_study_uid(ct[0]), "cine": cine.StudyInstanceUID,
           "j2k": j2k.StudyInstanceUID}
    server.kill()


def synth_study_uid(path) -> str:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID


def drawn(page) -> bool:
    """Whether OHIF's viewport canvas shows an image (WebGL: read through a screenshot, not the context)."""
    canvas = page.locator("canvas.cornerstone-canvas").first
    if canvas.count() == 0 or not canvas.is_visible():
        return False
    img = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
    lo, hi = img.getextrema()
    return hi - lo > 40 and sum(1 for count in img.histogram() if count) > 20


def test_ohif_lists_opens_and_draws(ohif_box, tmp_path):
    base = ohif_box["server"].url
    failed, frames = [], []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()

        def on_response(response):
            if response.status >= 400:
                failed.append(f"{response.status} {response.request.method} {response.url}")
            if "/frames/" in response.url:
                frames.append(response.headers.get("content-type", ""))

        page.on("response", on_response)
        console = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:300]) if m.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:300]))
        page.goto(base + "/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()

        page.goto(base + "/ohif/")
        try:
            page.wait_for_selector("text=OHIF, CHEST", timeout=60_000)  # the study list, from QIDO-RS
        except Exception:
            page.screenshot(path=tmp_path / "ohif-00-failed.png")
            raise AssertionError(f"no study list; errors {failed}, console {console[:20]}, shot {tmp_path}") from None
        page.wait_for_selector("text=OHIF, SONO", timeout=10_000)
        page.screenshot(path=tmp_path / "ohif-01-list.png")

        for name in ("ct", "cine", "j2k"):
            study = ohif_box[name]
            page.goto(f"{base}/ohif/viewer?StudyInstanceUIDs={study}")  # what the study page links to
            wait_until(lambda: drawn(page), 90, interval=0.5, what=f"OHIF to draw the {name}")
            page.screenshot(path=tmp_path / f"ohif-02-{name}.png")
        context.close()
    assert not failed, failed
    errors = [c for c in console if not c.startswith("warning")]
    assert not errors, errors  # e.g. a decoder refused by the CSP, or a frame OHIF could not decode
    # OHIF asked with transfer-syntax=* and got the cine's frames as stored, labelled JPEG baseline.
    assert any(f"transfer-syntax={JPEG_BASELINE}" in t for t in frames), frames
