"""Issue 22, done when: the admin does each operation in at most three clicks from the study page - counted
in Debian's Chromium (Playwright): correct (Fix…, Save correction), delete (Fix…, Delete, confirm), restore
from the recycle bin; the study page then shows the corrected data."""
from __future__ import annotations

import pydicom

import synth
from helpers import ADMIN_PASSWORD, Server, chromium, dcmtk
from test_correct import _qido


def test_admin_fixes_and_deletes_in_three_clicks(data_dir, tmp_path):
    files = synth.write_study(tmp_path / "s", n_series=1, per_series=2, patient_name="TYPO^NAM", patient_id="B-1")
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    srv = Server(data_dir).start()
    try:
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files).returncode == 0
        with chromium() as browser:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(srv.url + "/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            study_page = f"{srv.url}/studies/{study_uid}"

            page.goto(study_page)
            page.click("text=Fix…")  # 1
            page.fill("#correct input[name=PatientName]", "TYPO^NAME")
            page.fill("#correct input[name=reason]", "typo")
            page.click("text=Save correction")  # 2
            page.wait_for_load_state()
            assert page.url == study_page and "Corrected 2 image(s)" in page.content()
            assert "TYPO, NAME" in page.inner_text(".patient-head")

            page.on("dialog", lambda dialog: dialog.accept())  # 3: the confirmation
            page.click("text=Fix…")  # 1
            page.fill("#delete input[name=reason]", "test study")
            page.click("#delete button[type=submit]")  # 2 (+ 3)
            page.wait_for_load_state()
            assert "restorable from the recycle bin" in page.content() and _qido(srv, StudyInstanceUID=study_uid) == []

            page.click("nav >> text=Recycle bin")
            page.click("text=Restore")
            page.wait_for_load_state()
            assert page.url == study_page and len(_qido(srv, StudyInstanceUID=study_uid)) == 1
    finally:
        srv.stop()
