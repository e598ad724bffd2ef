"""One running appliance with a CT series, a calibrated image and an ultrasound cine, for the viewer tests."""

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import synth
from helpers import ADMIN_PASSWORD, Server, chromium, dcmtk, init_data_dir

def calibrated_image(study_uid: str, patient_id: str):
    """A 16-bit 200x200 image with 0.5 mm pixels and two marks 100 pixels (50.0 mm) apart."""
    ds = synth.make_instance("CT", patient_name="RULER^TEST", patient_id=patient_id, study_uid=study_uid,
                             series_number=9, modality="DX", study_description="Chest CT")
    pixels = np.full((200, 200), 100, dtype=np.uint16)
    pixels[95:106, 20] = 4000
    pixels[95:106, 120] = 4000
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    ds.SeriesDescription = "Ruler"
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture(scope="module")
def viewer_box(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    data = init_data_dir(root / "data")
    files = root / "files"
    study_uid = generate_uid()
    ct = synth.write_study(files / "ct", n_series=1, per_series=5, kind="CT", patient_name="VIEWER^CHEST",
                           patient_id="VIEW001", study_uid=study_uid, study_description="Chest CT",
                           accession="ACC77")
    ruler = calibrated_image(study_uid, "VIEW001")
    ruler_path = files / "ruler.dcm"
    ruler.save_as(ruler_path, enforce_file_format=True)
    prior = synth.write_study(files / "prior", n_series=1, per_series=1, kind="CT", patient_name="VIEWER^CHEST",
                              patient_id="VIEW001", study_date="20250101", study_description="Last year")
    cine = synth.make_instance("US_CINE_JPEG", patient_name="SONO^CINE", patient_id="VIEW002",
                               study_description="Abdomen US")
    cine_path = files / "cine.dcm"
    cine.save_as(cine_path, enforce_file_format=True)
    server = Server(data).start()
    sent = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *ct, ruler_path, *prior)
    assert sent.returncode == 0, sent.stderr
    sent = dcmtk("storescu", "-xy", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, cine_path)
    assert sent.returncode == 0, sent.stderr
    yield {"server": server, "study_uid": study_uid, "cine_study": cine.StudyInstanceUID,
           "ct_files": ct, "ruler": ruler}
    server.kill()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def logged_in(browser, viewer_box):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(viewer_box["server"].url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    yield page
    context.close()
