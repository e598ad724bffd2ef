"""The doctor's path in a real browser (Debian's Chromium via Playwright).

Search, open a CT, drag window/level and see the pixels change, scroll, measure a
known distance in mm, play an ultrasound cine, download the study as a ZIP and as
DICOMDIR media (validated with dcmtk). Screenshots go to the test's tmp dir or
$PACS_TEST_SCREENSHOTS; look at them when changing the viewer.
"""
import io
import os
import zipfile
from pathlib import Path

import pydicom
import pytest

from helpers import dcmtk, wait_until


@pytest.fixture
def shots(tmp_path):
    path = Path(os.environ.get("PACS_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def canvas_sample(page, selector=".vport canvas"):
    """A coarse fingerprint of what the canvas shows."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let sum = 0; for (let i = 0; i < d.length; i += 97) { sum += d[i]; } return sum; }""")


def attr(page, name, port=0):
    return page.locator(".vport").nth(port).get_attribute(name)


def wait_attr(page, name, predicate, port=0, timeout=15):
    """Poll a viewport's data attribute from Python (the page's CSP forbids evaluated strings)."""
    return wait_until(lambda: predicate(attr(page, name, port)), timeout, what=f"{name} on viewport {port}")


def wait_shown(page, index, port=0):
    wait_attr(page, "data-shown", lambda v: v == str(index), port)


def test_search_open_window_scroll(logged_in, viewer_box, shots):
    page = logged_in
    base = viewer_box["server"].url
    page.goto(base + "/studies")
    page.fill("input[name=name]", "viewer")  # partial, lower case
    page.click("text=Search")
    rows = page.locator("table.studies tbody tr")
    assert rows.count() == 2  # this year's CT and last year's prior
    assert "VIEWER, CHEST" in rows.first.inner_text()
    assert "Chest CT" in rows.first.inner_text()  # newest first
    page.screenshot(path=shots / "viewer-01-studies.png", full_page=True)

    rows.first.locator("text=Open").click()
    page.wait_for_selector(".vport[data-shown]")
    wait_shown(page, 0)
    page.screenshot(path=shots / "viewer-02-ct.png")
    before = canvas_sample(page)
    ww_before = attr(page, "data-ww")

    box = page.locator(".vport canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=8)
    page.mouse.up()
    wait_until(lambda: attr(page, "data-ww") != ww_before, 5, what="window width to change")
    assert canvas_sample(page) != before, "window/level drag did not change the pixels"
    page.screenshot(path=shots / "viewer-03-windowed.png")

    page.keyboard.press("ArrowDown")
    wait_shown(page, 1)
    assert "Image 2 / 5" in page.inner_text(".vport .ov.tl")
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, 120)
    wait_shown(page, 2)

    page.select_option("[data-preset]", "lung")
    assert attr(page, "data-ww") == "1500"


def test_measure_known_distance_in_mm(logged_in, viewer_box, shots):
    page = logged_in
    page.goto(viewer_box["server"].url + f"/view/{viewer_box['study_uid']}")
    page.wait_for_selector(".vthumb")
    page.locator(".vthumb", has_text="Ruler").click()
    wait_attr(page, "data-count", lambda v: v == "1")
    wait_shown(page, 0)
    page.click("[data-tool=measure]")

    def geometry():
        view = page.evaluate("(() => { const v = window.pacsViewer.ports[0].view; return {z: v.zoom, x: v.x, y: v.y}; })()")
        return view, page.locator(".vport canvas").bounding_box()

    # Wait until layout and fit have settled: the same geometry twice in a row.
    last = [None]

    def settled():
        now, last[0] = geometry(), last[0]
        stable = now == last[0]
        last[0] = now
        return stable

    wait_until(settled, 10, interval=0.2, what="the viewport to settle")
    view, box = last[0]

    def screen(ix, iy):  # image pixel centre -> page coordinates
        return box["x"] + view["x"] + (ix + 0.5) * view["z"], box["y"] + view["y"] + (iy + 0.5) * view["z"]

    page.mouse.move(*screen(20, 100))
    page.mouse.down()
    page.mouse.move(*screen(120, 100), steps=5)
    page.mouse.up()
    label = page.inner_text("[data-measure-label]")
    assert label.endswith(" mm"), label
    assert abs(float(label.split()[0]) - 50.0) <= 0.5, label
    page.screenshot(path=shots / "viewer-04-measure.png")


def test_cine_plays_ultrasound(logged_in, viewer_box, shots):
    page = logged_in
    page.goto(viewer_box["server"].url + f"/view/{viewer_box['cine_study']}")
    wait_attr(page, "data-count", lambda v: v == "30")
    wait_shown(page, 0)
    page.screenshot(path=shots / "viewer-05-us.png")
    assert canvas_sample(page) > 0  # colour frames are drawn
    page.click("[data-action=play]")
    wait_attr(page, "data-shown", lambda v: v is not None and int(v) >= 3)
    page.click("[data-action=play]")
    assert attr(page, "data-playing") == "0"
    assert "Frame" in page.inner_text(".vport .ov.tl")


def test_tags_panel_and_side_by_side(logged_in, viewer_box, shots):
    page = logged_in
    page.goto(viewer_box["server"].url + f"/view/{viewer_box['study_uid']}")
    wait_shown(page, 0)
    page.click("[data-action=tags]")
    page.wait_for_selector("[data-tag-rows] tr")
    page.fill("[data-tag-filter]", "Patient's Name")
    visible = [t for t in page.locator("[data-tag-rows] tr:visible").all_inner_texts()]
    assert any("VIEWER^CHEST" in t for t in visible)
    page.click("[data-action=layout]")
    assert page.locator(".vport").count() == 2
    page.select_option("[data-study-picker]", index=1)  # the prior study into the second viewport
    wait_until(lambda: page.locator(".vthumb").count() == 1, 10, what="the prior's series")
    page.locator(".vthumb").first.click()
    wait_shown(page, 0, port=1)
    page.screenshot(path=shots / "viewer-06-compare.png")


def test_download_zip_and_dicomdir_media(logged_in, viewer_box, tmp_path):
    page = logged_in
    study_uid = viewer_box["study_uid"]
    page.goto(viewer_box["server"].url + f"/studies/{study_uid}")
    with page.expect_download() as dl:
        page.click("text=Download ZIP")
    data = Path(dl.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert len(names) == 6  # 5 CT + the ruler
        sent = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, viewer_box["ct_files"])}
        got = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names)}
        assert set(sent) <= set(got)
        for uid, ds in sent.items():
            assert got[uid].PixelData == ds.PixelData
            assert got[uid].PatientName == "VIEWER^CHEST"

    with page.expect_download() as dl:
        page.click("text=Export for CD/USB")
    media = tmp_path / "media"
    with zipfile.ZipFile(dl.value.path()) as zf:
        zf.extractall(media)
    dicomdir = media / "DICOMDIR"
    assert dicomdir.exists()
    dump = dcmtk("dcmdump", dicomdir)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("IMAGE") >= 6 or dump.stdout.count("(0004,1430)") >= 6
    check = dcmtk("dciodvfy", dicomdir)
    assert "Error" not in check.stderr, check.stderr
    files = [p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert len(files) == 6
    assert all(len(part) <= 8 and part.upper() == part for p in files for part in p.relative_to(media).parts)
