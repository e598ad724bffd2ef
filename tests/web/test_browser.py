"""End to end in a real browser: Debian's Chromium driven by Playwright against a real `serve` process.

Logs in, adds a peer and echoes it (a dcmtk storescp started here answers), creates
a user, reads the audit log, checks a clinician is kept out of admin pages, and
takes screenshots at each step (under the test's tmp dir; look at them when
changing the UI).
"""
import os
import subprocess
from pathlib import Path

import pytest

from helpers import ADMIN_PASSWORD, Server, chromium, dcmtk, free_port, port_open, wait_until
from synth import write_study

@pytest.fixture
def storescp(tmp_path):
    port = free_port()
    out = tmp_path / "scp"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "US_ROOM1", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: port_open(port), 10, what="storescp to listen")
    yield port
    proc.kill()
    proc.wait(5)


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def test_admin_journey_in_chromium(data_dir, tmp_path, storescp, browser):
    # PACS_TEST_SCREENSHOTS keeps them somewhere pytest will not rotate away.
    shots = Path(os.environ.get("PACS_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    server = Server(data_dir).start()
    try:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.on("dialog", lambda d: d.accept())
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(server.url + "/admin/users")
        assert "/login" in page.url
        page.screenshot(path=shots / "01-login.png")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "not-the-password")
        page.click("button[type=submit]")
        assert "Wrong user name or password" in page.inner_text(".alert")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/admin/users")  # back where we wanted to go

        files = write_study(tmp_path / "study", n_series=1, per_series=2, kind="CT", patient_name="BROWSER^TEST",
                            patient_id="BRW001", study_description="Chest")
        sent = dcmtk("storescu", "-aet", "CT_ROOM", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *files)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        page.goto(server.url + "/")
        assert page.inner_text("h1") == "Dashboard"
        latest = page.inner_text("section:has(h2:text('Latest studies'))")
        assert "BROWSER TEST" in latest and "CT_ROOM (127.0.0.1)" in latest and "Chest" in latest
        page.screenshot(path=shots / "02-dashboard.png", full_page=True)

        page.goto(server.url + "/admin/peers")
        page.fill("input[name=ae_title]", "US_ROOM1")
        page.fill("input[name=host]", "127.0.0.1")
        page.fill("input[name=port]", str(storescp))
        page.fill("input[name=description]", "Ultrasound, room 1")
        page.click("text=Add peer")
        assert "Added US_ROOM1" in page.inner_text(".alert")
        page.click("tr:has-text('US_ROOM1') >> text=Test")
        page.wait_for_selector(".alert")
        assert "Echo OK" in page.inner_text(".alert"), page.inner_text(".alert")
        page.screenshot(path=shots / "03-peers-echo.png", full_page=True)

        page.goto(server.url + "/admin/users")
        page.fill("form[action='/admin/users'] input[name=username]", "dr.house")
        page.fill("form[action='/admin/users'] input[name=password]", "vicodin-and-canes")
        page.select_option("form[action='/admin/users'] select[name=role]", "clinician")
        page.click("text=Add user")
        assert "Created dr.house" in page.inner_text(".alert")
        assert page.locator("td:has-text('dr.house')").count() == 1
        page.screenshot(path=shots / "04-users.png", full_page=True)

        page.goto(server.url + "/admin/worklist")
        page.fill("input[name=patient_name]", "Doe, Jane")
        page.fill("input[name=patient_id]", "WL-001")
        page.fill("input[name=scheduled_time]", "09:30")
        page.fill("input[name=modality]", "US")
        page.fill("input[name=station_ae]", "US_ROOM1")
        page.fill("input[name=step_description]", "Abdomen ultrasound")
        page.click("text=Add to worklist")
        assert "Added the worklist entry" in page.inner_text(".alert")
        assert "Doe Jane" in page.inner_text("table")
        page.screenshot(path=shots / "04b-worklist.png", full_page=True)
        found = dcmtk("findscu", "-W", "-aet", "US_ROOM1", "-aec", "PACSBOX", "-k", "PatientID=WL-001",
                      "-k", "PatientName", "127.0.0.1", server.dicom_port)
        assert "Doe^Jane" in found.stdout + found.stderr  # the modality sees it

        def audit_actions():
            page.goto(server.url + "/admin/audit")
            return set(page.locator("table.audit td .chip").all_inner_texts())

        wanted = {"login.failed", "login.ok", "dicom.association", "peer.add", "dicom.echo", "user.create",
                  "worklist.add", "dicom.find"}
        wait_until(lambda: wanted <= audit_actions(), 10, what="the audit entries")
        page.screenshot(path=shots / "05-audit.png", full_page=True)
        page.fill("input[name=action]", "user")
        page.click("text=Filter")
        assert set(page.locator("table.audit td .chip").all_inner_texts()) == {"user.create"}
        page.click("text=Check integrity")
        assert "Audit log intact" in page.inner_text(".alert")

        page.goto(server.url + "/admin/settings")
        page.screenshot(path=shots / "06-settings.png", full_page=True)

        tablet = browser.new_page(viewport={"width": 768, "height": 1024}, storage_state=page.context.storage_state())
        tablet.goto(server.url + "/")
        tablet.screenshot(path=shots / "07-dashboard-tablet.png", full_page=True)
        tablet.click("[data-toggle=nav]")
        assert tablet.locator("#nav a:has-text('Users')").is_visible()
        tablet.screenshot(path=shots / "08-tablet-menu.png")

        page.click("text=Sign out")
        page.wait_for_url("**/login")
        page.fill("input[name=username]", "dr.house")
        page.fill("input[name=password]", "vicodin-and-canes")
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/studies*")  # clinic staff start on the study list
        assert page.locator("#nav a:has-text('Users')").count() == 0
        response = page.goto(server.url + "/admin/users")
        assert response.status == 403
        page.screenshot(path=shots / "09-clinician-forbidden.png")
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        server.stop()
    print(f"screenshots in {shots}")
