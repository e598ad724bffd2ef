"""The pages around the viewer, as clinic staff and the admin see them in a real browser:
thumbnail labels, the study list on a tablet, the dashboard, the backup target test, the sidebar."""
import io

import pytest

from PIL import Image

from helpers import wait_until


def test_thumbnail_labels_sit_under_the_images(logged_in, viewer_box):
    page = logged_in
    page.goto(viewer_box["server"].url + f"/studies/{viewer_box['uids']['calibrated']}")
    thumb = page.locator(".thumb").first
    img, label = thumb.locator("img").bounding_box(), thumb.locator("span").first.bounding_box()
    assert label["y"] >= img["y"] + img["height"] - 1, (img, label)
    assert abs(label["x"] - img["x"]) < 2


def test_study_list_on_a_tablet_is_cards_with_the_open_button_in_view(logged_in, viewer_box):
    page = logged_in
    page.set_viewport_size({"width": 600, "height": 900})
    page.goto(viewer_box["server"].url + "/studies")
    assert not page.locator("table.studies thead").is_visible()
    assert page.evaluate("document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth")
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth + 1")  # no sideways scrolling inside either
    button = page.locator("table.studies a.btn", has_text="Open").first
    box = button.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 600
    date_cell = page.locator("table.studies tbody tr").first.locator("td[data-label='Study date']")
    assert "Study date" in date_cell.evaluate("td => getComputedStyle(td, '::before').content")  # labelled
    button.click()
    page.wait_for_selector(".vport")


def test_dashboard_rows_open_the_study_and_no_forecast_from_an_hour(logged_in, viewer_box):
    page = logged_in
    page.goto(viewer_box["server"].url + "/")
    tile = page.locator(".tile", has_text="Full in")
    assert "forecast after a day of arrivals" in tile.inner_text()
    assert "days" not in tile.locator(".tile-value").inner_text()
    row = page.locator("tr[data-href]").first
    href = row.get_attribute("data-href")
    row.locator("td").nth(2).click()  # the modality cell: not a link itself
    page.wait_for_url("**" + href)
    assert page.locator(".patient-head").is_visible()


def test_backup_target_set_and_tested_from_the_settings_page(logged_in, viewer_box, tmp_path):
    page = logged_in
    base = viewer_box["server"].url
    page.goto(base + "/")
    backup = page.locator(".tile", has_text="Backup")
    if "Not set up" in backup.inner_text():
        backup.locator("a", has_text="Settings").click()
        page.wait_for_url("**/admin/settings*")
    else:
        page.goto(base + "/admin/settings")
    form = page.locator("#setting-backup-target")
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    form.locator("input[name=value]").fill(str(offsite))
    form.locator("button", has_text="Test").click()
    page.wait_for_load_state()
    assert "works" in page.inner_text(".alert-ok"), page.inner_text("main")
    assert not [p for p in offsite.rglob("*") if p.is_file()], "the probe object was left behind"

    form = page.locator("#setting-backup-target")
    form.locator("input[name=value]").fill("ftp://example.invalid/x")
    form.locator("button", has_text="Test").click()
    page.wait_for_load_state()
    assert "unknown backup target scheme" in page.inner_text(".alert-error")

    form = page.locator("#setting-backup-target")
    form.locator("input[name=value]").fill(str(offsite))
    form.locator("button", has_text="Save").click()
    page.wait_for_load_state()
    assert "Saved [backup] target" in page.inner_text(".alert-ok")
    config = (viewer_box["server"].data_dir / "appliance.toml").read_text()
    assert f'target = "{offsite}"' in config


def test_sidebar_runs_the_full_height_of_a_long_page(logged_in, viewer_box):
    page = logged_in
    page.set_viewport_size({"width": 1300, "height": 600})
    page.goto(viewer_box["server"].url + "/admin/settings")
    height = page.evaluate("document.scrollingElement.scrollHeight")
    assert height > 1800, height  # a long page
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    wait_until(lambda: shot.size[1] >= height - 5, 1, what="a full-page screenshot")
    for y in (300, height // 2, height - 20):
        r, g, b = shot.getpixel((20, y))
        assert r + g + b < 150, (y, (r, g, b))  # the sidebar's dark background


def search_names(page, base, **fields):
    page.goto(base + "/studies")
    for name, value in fields.items():
        page.fill(f"input[name={name}]", value)
    page.click("text=Search")
    page.wait_for_load_state()
    return [r.locator("td").first.inner_text() for r in page.locator("table.studies tbody tr").all()
            if r.locator("td").count() > 1]


@pytest.mark.parametrize("typed, shown", [
    ("Moore, Sara", "MOORE, SARA"), ("sara moore", "MOORE, SARA"), ("moore^sara", "MOORE, SARA"),
    ("muller", "MÜLLER, HANS"), ("MÜLLER", "MÜLLER, HANS"), ("hans müller", "MÜLLER, HANS"),
])
def test_search_names_the_way_people_type(logged_in, viewer_box, typed, shown):
    found = search_names(logged_in, viewer_box["server"].url, name=typed)
    assert [n.upper() for n in found] == [shown], (typed, found)


def test_search_finds_the_name_as_the_list_shows_it_and_ids_in_any_case(logged_in, viewer_box):
    base = viewer_box["server"].url
    shown = search_names(logged_in, base, patient_id="MS-77A")
    assert len(shown) == 1, shown
    assert search_names(logged_in, base, name=shown[0]) == shown  # copied from the list, searched again
    assert search_names(logged_in, base, patient_id="mu-1") and search_names(logged_in, base, patient_id="MU-1")
