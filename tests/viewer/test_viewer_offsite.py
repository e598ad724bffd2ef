"""A study recycled to free space, as a doctor looking for last year's study sees it (issue 20 item 7).

The box is prepared in process with the recycling tests' kit (a folder backup target, a
simulated disk), one of a patient's two studies is backed up and recycled, then a real
`pacs-appliance serve` runs on that data directory for Chromium.
"""
import sys
from pathlib import Path

import pytest

from helpers import ADMIN_PASSWORD, Server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recycle"))
from recyclekit import MiB, make_recycle_box  # noqa: E402

from test_viewer_browser import wait_shown  # noqa: E402


@pytest.fixture(scope="module")
def offsite_box(tmp_path_factory):
    root = tmp_path_factory.mktemp("offsite")
    box = make_recycle_box(root, recycle_free_below_mb=3, recycle_target_free_mb=3)
    try:
        last_year = box.add_study("A", n=3, patient_id="OFF1")
        this_year = box.add_study("B", n=2, patient_id="OFF1")
        box.age("A", 400)
        box.app.backup.run(trigger="manual")
        box.capacity = box.archive_bytes() + 3 * MiB - box.sealed_size("A") + 100
        assert len(box.app.recycler.run().recycled) == 1
    finally:
        box.app.index.close()
    server = Server(box.data_dir, env={"PACS_BACKUP_TARGET": f"file://{box.nas}", "PACS_INBOX_ENABLED": "false"})
    server.start()
    yield {"server": server, "last_year": last_year, "this_year": this_year}
    server.kill()


@pytest.fixture
def page(browser, offsite_box):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(offsite_box["server"].url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    yield page
    context.close()


def test_offsite_study_is_listed_marked_and_in_qido(page, offsite_box):
    base = offsite_box["server"].url
    page.goto(base + "/studies?patient_id=off1")
    rows = page.locator("table.studies tbody tr")
    assert rows.count() == 2
    offsite = rows.filter(has_text="offsite")
    assert offsite.count() == 1
    assert offsite.locator("button", has_text="Bring back").is_visible()
    assert rows.filter(has_text="Open").count() == 1  # the live one opens as usual

    found = page.request.get(base + "/dicomweb/studies?PatientID=OFF1",
                             headers={"Accept": "application/dicom+json"}).json()
    availability = {s["0020000D"]["Value"][0]: s["00080056"]["Value"][0] for s in found}
    assert availability == {offsite_box["last_year"]: "NEARLINE", offsite_box["this_year"]: "ONLINE"}

    # the priors: the study page and the viewer's study menu
    page.goto(base + f"/studies/{offsite_box['this_year']}")
    assert "offsite" in page.locator("ul.list li").first.inner_text()
    page.goto(base + f"/view/{offsite_box['this_year']}")
    wait_shown(page, 0)
    option = page.locator(f"[data-study-picker] option[value='{offsite_box['last_year']}']")
    assert "(offsite)" in option.inner_text()


def test_bring_back_shows_progress_and_opens_the_viewer(page, offsite_box):
    base = offsite_box["server"].url
    page.goto(base + f"/view/{offsite_box['last_year']}")  # not here yet: the study page explains
    page.wait_for_url(f"**/studies/{offsite_box['last_year']}*")
    assert "Stored offsite only" in page.inner_text(".offsite-card")
    page.click("text=Bring it back")
    # progress on the study page, then the viewer by itself (or at once if it was quick)
    page.wait_for_selector(".vport[data-shown]", timeout=60_000)
    wait_shown(page, 0)
    assert page.locator(".vthumb").count() == 3  # the kit files each instance as its own series
    page.goto(base + "/studies?patient_id=OFF1")
    assert page.locator("table.studies tbody tr", has_text="offsite").count() == 0
    assert page.locator("table.studies tbody tr", has_text="Open").count() == 2
