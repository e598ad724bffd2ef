"""dicomweb-client (the reference Python client) against a running appliance, over HTTP Basic."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

import synth


@pytest.fixture(scope="module")
def stored(client):
    """A CT study of 2 series x 2 instances plus a 30-frame JPEG ultrasound, stored with STOW-RS."""
    cts = [synth.make_instance("CT", patient_name="DWEB^CT", patient_id="DW001", study_uid=study, series_uid=s,
                               instance_number=i + 1, accession="ACCDW1")
           for study in [pydicom.uid.generate_uid()] for s in [pydicom.uid.generate_uid(), pydicom.uid.generate_uid()]
           for i in range(2)]
    us = synth.make_instance("US_CINE_JPEG", patient_name="DWEB^US", patient_id="DW002")
    result = client.store_instances(cts + [us])
    assert len(result.ReferencedSOPSequence) == 5
    assert "FailedSOPSequence" not in result
    return cts, us


def test_search(client, stored):
    cts, us = stored
    studies = client.search_for_studies(search_filters={"PatientID": "DW001"})
    assert len(studies) == 1
    study = pydicom.Dataset.from_json(studies[0])
    assert study.StudyInstanceUID == cts[0].StudyInstanceUID
    assert study.NumberOfStudyRelatedInstances == 2 * 2
    assert study.ModalitiesInStudy == "CT"
    assert study.RetrieveURL.endswith(f"/dicomweb/studies/{study.StudyInstanceUID}")
    # tags work as well as keywords, wildcards and fuzzy matching are accepted
    by_tag = client.search_for_studies(search_filters={"00100010": "dweb^*"}, fuzzymatching=True)
    assert {s["00100020"]["Value"][0] for s in by_tag} == {"DW001", "DW002"}
    series = client.search_for_series(study_instance_uid=cts[0].StudyInstanceUID)
    assert len(series) == 2
    instances = client.search_for_instances(study_instance_uid=cts[0].StudyInstanceUID,
                                            series_instance_uid=cts[0].SeriesInstanceUID)
    assert sorted(pydicom.Dataset.from_json(i).SOPInstanceUID for i in instances) == sorted(
        d.SOPInstanceUID for d in cts[:2])
    page = client.search_for_instances(search_filters={"PatientID": "DW001"}, limit=3, offset=2)
    assert len(page) == 2
    everything = client.search_for_instances(study_instance_uid=us.StudyInstanceUID, fields=["all"])
    assert pydicom.Dataset.from_json(everything[0]).PhotometricInterpretation == "YBR_FULL_422"


def test_retrieve_instance_and_series(client, stored):
    cts, us = stored
    ct = cts[0]
    got = client.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert got.SOPInstanceUID == ct.SOPInstanceUID
    assert np.array_equal(got.pixel_array, ct.pixel_array)
    series = client.retrieve_series(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert sorted(d.SOPInstanceUID for d in series) == sorted(d.SOPInstanceUID for d in cts[:2])
    study = client.retrieve_study(ct.StudyInstanceUID)
    assert len(study) == 4
    # transcoding on request: the JPEG ultrasound as Explicit VR Little Endian
    plain = client.retrieve_instance(us.StudyInstanceUID, us.SeriesInstanceUID, us.SOPInstanceUID,
                                     media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
    assert plain.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert plain.pixel_array.shape == us.pixel_array.shape


def test_metadata(client, stored, http):
    cts, us = stored
    meta = client.retrieve_instance_metadata(us.StudyInstanceUID, us.SeriesInstanceUID, us.SOPInstanceUID)
    ds = pydicom.Dataset.from_json(meta, bulk_data_uri_handler=lambda *a: b"")
    assert ds.NumberOfFrames == 30
    uri = meta["7FE00010"]["BulkDataURI"]
    assert "/bulkdata/7FE00010" in uri
    study_meta = client.retrieve_study_metadata(cts[0].StudyInstanceUID)
    assert len(study_meta) == 4
    frames = client.retrieve_bulkdata(uri)
    assert len(frames) == 30


def test_frames(client, stored):
    cts, us = stored
    # default Accept (multipart/related; type="*/*"): frames as stored (JPEG baseline bitstreams)
    jpegs = client.retrieve_instance_frames(us.StudyInstanceUID, us.SeriesInstanceUID, us.SOPInstanceUID,
                                            frame_numbers=[1, 30])
    assert len(jpegs) == 2 and all(f[:2] == b"\xff\xd8" for f in jpegs)
    raw = client.retrieve_instance_frames(us.StudyInstanceUID, us.SeriesInstanceUID, us.SOPInstanceUID,
                                          frame_numbers=[2],
                                          media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
    assert len(raw[0]) == us.Rows * us.Columns * 3
    ct = cts[0]
    native = client.retrieve_instance_frames(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                             frame_numbers=[1])
    assert native[0] == ct.PixelData


def test_rendered(client, stored):
    cts, us = stored
    ct = cts[0]
    jpeg = client.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert Image.open(io.BytesIO(jpeg)).size == (ct.Columns, ct.Rows)
    png = client.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                            media_types=("image/png",), params={"window": "40,400",
                                                                                "viewport": "64,64"})
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (64, 64)
    frame = client.retrieve_instance_frames_rendered(us.StudyInstanceUID, us.SeriesInstanceUID,
                                                     us.SOPInstanceUID, frame_numbers=[15])
    assert Image.open(io.BytesIO(frame)).size == (us.Columns, us.Rows)
