"""A clinic day in a real browser: a long series opens at once, ultrasound is measured in cm,
cine plays at its recorded rate, mixed image sizes fit, and a broken image is explained.

Behaviour only: what is drawn, what is said, what was requested first. Speed is
measured by bench/viewer_bench.py, never here. Cine rate is checked on Playwright's
fake clock, so "one second of playback" is exact and the test cannot be flaky.
"""
import pytest

from helpers import wait_until

from test_viewer_browser import attr, shots, wait_attr, wait_shown  # noqa: F401 - shots is a fixture


def open_viewer(page, viewer_box, name):
    page.goto(viewer_box["server"].url + f"/view/{viewer_box['uids'][name]}")


def lit_pixels(page, port=0):
    """How many sampled canvas pixels are not black (the image is drawn)."""
    return page.locator(".vport canvas").nth(port).evaluate("""c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4 * 13) { if (d[i] + d[i + 1] + d[i + 2] > 30) n++; } return n; }""")


def test_long_series_draws_the_first_image_before_reading_the_rest(logged_in, viewer_box):
    page = logged_in
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    open_viewer(page, viewer_box, "long")
    wait_shown(page, 0)
    assert lit_pixels(page) > 0
    assert attr(page, "data-count") == "120"

    api = [u for u in requests if "/images?" in u or "/frames/" in u or "/metadata" in u]
    assert not any(u.endswith("/metadata") for u in requests), "the whole series' headers were fetched"
    assert "/images?offset=0&limit=1" in api[0], api[:3]  # order + the first image's attributes only
    first_frame = next(i for i, u in enumerate(api) if "/frames/" in u)
    assert all("limit=1" in u for u in api[:first_frame]), api[:first_frame + 1]

    # The rest arrives in pages and becomes scrollable: the last slice can be reached and drawn.
    wait_attr(page, "data-loaded", lambda v: v == "120", timeout=60)
    pages = [u for u in requests if "/images?" in u]
    assert 2 <= len(pages) <= 4, pages  # 1 + 120/50 pages, not one request per image
    page.locator(".vport canvas").hover()
    page.keyboard.press("End")
    wait_shown(page, 119)
    assert "Image 120 / 120" in page.inner_text(".vport .ov.tl")


def test_scrolling_ahead_loads_the_slice_being_looked_at(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "long")
    wait_shown(page, 0)
    page.locator(".vport canvas").hover()
    for _ in range(6):
        page.keyboard.press("PageDown")
    wait_shown(page, 60)
    assert lit_pixels(page) > 0


def test_each_image_fits_when_its_size_changes(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "mixed")
    wait_shown(page, 0)
    box = page.locator(".vport").bounding_box()

    def whole_image_visible(width, height):
        zoom = float(attr(page, "data-zoom"))
        return zoom * width <= box["width"] + 1 and zoom * height <= box["height"] + 1 and (
            abs(zoom * width - box["width"]) < 2 or abs(zoom * height - box["height"]) < 2)

    assert whole_image_visible(320, 240)
    small_zoom = float(attr(page, "data-zoom"))
    page.locator(".vport canvas").hover()
    page.keyboard.press("ArrowDown")
    wait_shown(page, 1)
    assert "640 × 480" in page.inner_text(".vport .ov.tr")
    assert whole_image_visible(640, 480), attr(page, "data-zoom")
    assert float(attr(page, "data-zoom")) < small_zoom
    page.keyboard.press("ArrowDown")
    wait_shown(page, 2)
    assert whole_image_visible(320, 240)


def test_title_has_no_stray_separator_without_description(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "mixed")
    wait_shown(page, 0)
    title = page.inner_text(".vtitle").strip()
    assert not title.endswith("·"), title
    assert "··" not in page.inner_text(".vport .ov.tl")


# -- measuring -------------------------------------------------------------------------------------
def settled_geometry(page, port=0):
    last = [None]

    def settled():
        view = page.evaluate(f"(() => {{ const v = window.pacsViewer.ports[{port}].view; "
                             "return {z: v.zoom, x: v.x, y: v.y}; })()")
        now = (view, page.locator(".vport canvas").nth(port).bounding_box())
        stable, last[0] = now == last[0], now
        return stable

    wait_until(settled, 10, interval=0.2, what="the viewport to settle")
    return last[0]


def measure(page, a, b):
    """Drag the measure tool from image pixel ``a`` to ``b``; the label shown."""
    view, box = settled_geometry(page)

    def screen(ix, iy):
        return box["x"] + view["x"] + (ix + 0.5) * view["z"], box["y"] + view["y"] + (iy + 0.5) * view["z"]

    page.click("[data-action=clear]")
    page.click("[data-tool=measure]")
    page.mouse.move(*screen(*a))
    page.mouse.down()
    page.mouse.move(*screen(*b), steps=5)
    page.mouse.up()
    return page.inner_text("[data-measure-label]")


def open_series(page, text):
    page.wait_for_selector(".vthumb")
    page.locator(".vthumb", has_text=text).click()
    wait_attr(page, "data-count", lambda v: v == "1")
    wait_shown(page, 0)


def test_ultrasound_caliper_in_cm_from_the_region(logged_in, viewer_box, shots):
    page = logged_in
    open_viewer(page, viewer_box, "calibrated")
    open_series(page, "Calibrated US")
    label = measure(page, (40, 120), (81, 120))  # 41 pixels of 0.026 cm
    assert label == "1.07 cm", label
    assert attr(page, "data-measure-source") == "ultrasound region"
    assert "px" not in label
    page.screenshot(path=shots / "viewer-07-us-caliper.png")

    label = measure(page, (140, 120), (180, 120))  # from the left view into the right one
    assert "crosses two ultrasound regions" in label, label


def test_imager_pixel_spacing_is_labelled_at_detector(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "calibrated")
    open_series(page, "Detector")
    label = measure(page, (20, 100), (120, 100))  # 100 pixels of 0.2 mm
    assert label == "20.0 mm at detector", label
    assert attr(page, "data-measure-source") == "Imager Pixel Spacing"


def test_px_only_when_nothing_calibrates(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "mixed")
    wait_shown(page, 0)
    label = measure(page, (10, 10), (50, 10))
    assert label == "40 px (no calibration)", label


# -- cine ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, fps, speed, source", [
    ("cine_frame_time", 30, "1", "Frame Time"),
    ("cine_frame_time", 30, "2", "Frame Time"),
    ("cine_vector", 20, "1", "Frame Time Vector"),
    ("cine_cine_rate", 15, "1", "Cine Rate"),
    ("cine_recommended", 25, "0.5", "Recommended Display Frame Rate"),
])
def test_cine_advances_at_the_recorded_rate(logged_in, viewer_box, name, fps, speed, source):
    page = logged_in
    page.clock.install()
    open_viewer(page, viewer_box, name)
    wait_attr(page, "data-loaded", lambda v: v == "30", timeout=30)  # every frame in hand
    wait_shown(page, 0)
    assert attr(page, "data-rate-source") == source
    assert abs(float(attr(page, "data-fps")) - fps) < 0.01
    page.select_option("[data-speed]", speed)
    page.clock.pause_at(page.evaluate("Date.now()") + 10)  # from here time moves only when the test says so
    page.click("[data-action=play]")
    page.clock.run_for(1000)
    advanced = int(attr(page, "data-advanced"))
    expected = fps * float(speed)
    assert abs(advanced - expected) <= max(1, 0.05 * expected), (advanced, expected)
    assert "Frame" in page.inner_text(".vport .ov.tl")


# -- errors ----------------------------------------------------------------------------------------
def test_undecodable_image_is_explained_and_thumbnail_is_a_placeholder(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "broken")
    wait_attr(page, "data-error", lambda v: v == "0")
    message = page.inner_text(".vport .msg")
    assert "cannot be displayed" in message, message
    assert "406" not in message and "frame" not in message.lower(), message
    page.wait_for_selector(".vthumb .vthumb-none")
    assert page.locator(".vthumb img").count() == 0  # no broken-image icon

    study = viewer_box["uids"]["broken"]
    series = page.locator(".vthumb").first.get_attribute("data-series")
    thumb = page.request.get(viewer_box["server"].url + f"/dicomweb/studies/{study}/series/{series}/thumbnail")
    assert 500 <= thumb.status < 600, thumb.status
    assert "could not be decoded" in thumb.text()


# -- shortcuts and side by side --------------------------------------------------------------------
def test_question_mark_shows_the_shortcuts(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "long")
    wait_shown(page, 0)
    assert not page.locator("[data-help]").is_visible()
    page.keyboard.press("?")
    assert page.locator("[data-help]").is_visible()
    assert "Window/level" in page.inner_text("[data-help]")
    page.keyboard.press("Escape")
    assert not page.locator("[data-help]").is_visible()


def test_linked_scrolling_side_by_side(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "long")
    wait_shown(page, 0)
    page.click("[data-action=layout]")
    wait_shown(page, 0, port=1)
    page.locator(".vport canvas").nth(1).click()
    page.keyboard.press("ArrowDown")
    wait_shown(page, 1, port=1)
    assert attr(page, "data-shown", 0) == "0"  # not linked yet: only the active one moved
    page.click("[data-action=link]")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    wait_shown(page, 3, port=1)
    wait_shown(page, 2, port=0)
    assert lit_pixels(page, 0) > 0 and lit_pixels(page, 1) > 0


def test_study_picker_readable_in_full(logged_in, viewer_box):
    page = logged_in
    open_viewer(page, viewer_box, "long")
    wait_shown(page, 0)
    label = page.locator("[data-study-label]")
    wait_until(lambda: label.inner_text(), 10, what="the study label")
    text = label.inner_text()
    assert "CT abdomen" in text and "(this study)" in text, text
    sidebar = page.locator(".vseries").bounding_box()
    box = label.bounding_box()
    assert box["x"] + box["width"] <= sidebar["x"] + sidebar["width"]  # wrapped inside, not cut off
    assert label.evaluate("el => el.scrollWidth <= el.clientWidth")
