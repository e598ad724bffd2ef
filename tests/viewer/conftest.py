"""One running appliance with a CT series, a calibrated image and an ultrasound cine, for the viewer tests.

Besides: a 120-slice series (progressive loading), a series mixing 320x240 and
640x480 images, ultrasound images calibrated by regions, cine clips whose rate
comes from each of the DICOM rate attributes, and an image nobody can decode.
"""

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, ExplicitVRLittleEndian, generate_uid

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


def gray_image(rows: int, cols: int, *, study_uid: str, series_uid: str, number: int, **identity):
    """A 16-bit MONOCHROME2 image of the given size with a bright square in the middle."""
    ds = synth.make_instance("CT", study_uid=study_uid, series_uid=series_uid, instance_number=number, **identity)
    pixels = np.full((rows, cols), 200, dtype=np.uint16)
    pixels[rows // 4: 3 * rows // 4, cols // 4: 3 * cols // 4] = 3000
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 1500, 3000
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.PixelSpacing  # uncalibrated unless a test says otherwise
    return ds


def us_region(x0, y0, x1, y1, delta_cm, units=3):
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units, units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta_cm, delta_cm
    return item


def ultrasound_calibrated(**identity):
    """A 320x240 ultrasound image with two side-by-side regions of 0.026 cm pixels (a dual B-mode view)."""
    ds = synth.make_instance("US", **identity)
    ds.SequenceOfUltrasoundRegions = [us_region(0, 0, 159, 239, 0.026), us_region(160, 0, 319, 239, 0.026)]
    ds.SeriesDescription = "Calibrated US"
    return ds


def detector_calibrated(**identity):
    """A DX image calibrated only at the detector (Imager Pixel Spacing 0.2 mm)."""
    ds = gray_image(200, 200, series_uid=generate_uid(), number=1, **identity)
    ds.Modality = "DX"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.SeriesDescription = "Detector"
    ds.SeriesNumber = 2
    return ds


def cine(rate: str, **identity):
    """The 30-frame JPEG ultrasound clip, its rate given by one attribute only."""
    ds = synth.make_instance("US_CINE_JPEG", **identity)
    del ds.FrameTime
    if rate == "frame_time":
        ds.FrameTime = 33.333  # 30 fps
    elif rate == "vector":
        ds.FrameTimeVector = [0] + [50] * 29  # 20 fps
        ds.FrameIncrementPointer = 0x00181065
    elif rate == "cine_rate":
        ds.CineRate = 15
    elif rate == "recommended":
        ds.RecommendedDisplayFrameRate = 25
    ds.SeriesDescription = f"Cine {rate}"
    return ds


def undecodable(**identity):
    """A JPEG baseline image whose bitstream is garbage: no decoder can show it."""
    ds = synth.make_instance("CT", **identity)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + bytes(range(256)) * 8 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    for kw in ("RescaleSlope", "RescaleIntercept"):
        if kw in ds:
            delattr(ds, kw)
    ds.SeriesDescription = "Broken"
    return ds


def _save(ds, directory, paths):
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    paths.append(path)


def clinic_day(files):
    """The extra studies of a clinic day; returns (paths, uids by name)."""
    files.mkdir(parents=True, exist_ok=True)
    paths, uids = [], {}
    # 120 slices (progressive loading)
    uids["long"] = generate_uid()
    series = generate_uid()
    for n in range(120):
        _save(synth.make_instance("CT", patient_name="LONG^SERIES", patient_id="VIEW003", study_uid=uids["long"],
                                  series_uid=series, instance_number=n + 1, study_description="CT abdomen"),
              files, paths)
    # mixed sizes, no study description
    uids["mixed"] = generate_uid()
    series = generate_uid()
    for n, (rows, cols) in enumerate([(240, 320), (480, 640), (240, 320)]):
        _save(gray_image(rows, cols, study_uid=uids["mixed"], series_uid=series, number=n + 1,
                         patient_name="MIXED^SIZES", patient_id="VIEW004"), files, paths)
    # calibration: ultrasound regions, Imager Pixel Spacing
    uids["calibrated"] = generate_uid()
    ident = {"patient_name": "CALIPER^SONO", "patient_id": "VIEW005", "study_uid": uids["calibrated"],
             "study_description": "Thyroid US"}
    _save(ultrasound_calibrated(**ident), files, paths)
    _save(detector_calibrated(**ident), files, paths)
    # cine rates, each clip its own study
    for rate in ("frame_time", "vector", "cine_rate", "recommended"):
        uids["cine_" + rate] = generate_uid()
        _save(cine(rate, patient_name="CINE^RATE", patient_id="VIEW006", study_uid=uids["cine_" + rate],
                   study_description="Cardiac US"), files, paths)
    # an image nobody can decode, beside a good one
    uids["broken"] = generate_uid()
    ident = {"patient_name": "BROKEN^IMAGE", "patient_id": "VIEW007", "study_uid": uids["broken"],
             "study_description": "Broken"}
    _save(undecodable(**ident), files, paths)
    # names as the front desk types them
    for name, pid in (("Moore^Sara", "ms-77a"), ("Müller^Hans", "MU-1")):
        ds = synth.make_instance("CT", patient_name=name, patient_id=pid, study_description="Search me")
        ds.SpecificCharacterSet = "ISO_IR 192"
        _save(ds, files, paths)
    return paths, uids


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
    extra, uids = clinic_day(files / "day")
    server = Server(data).start()
    sent = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, *ct, ruler_path, *prior)
    assert sent.returncode == 0, sent.stderr
    sent = dcmtk("storescu", "-xy", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, cine_path)
    assert sent.returncode == 0, sent.stderr
    sent = dcmtk("storescu", "+sd", "-xy", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port, files / "day")
    assert sent.returncode == 0, sent.stderr
    yield {"uids": uids, "server": server, "study_uid": study_uid, "cine_study": cine.StudyInstanceUID,
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
