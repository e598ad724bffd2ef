"""C-MOVE and C-GET against dcmtk's movescu/getscu and a pynetdicom SCU: counts, failures, byte identity."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import readback
import pydicom
import synth
from helpers import wait_until
from retrieval_support import SCU_AE, StoreSCP, cli, dataset_bytes
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)


def dcmtk(tool, *args, cwd=None):
    """A dcmtk tool run in ``cwd``, or in the -od folder: movescu +B writes to its working directory."""
    if cwd is None and "-od" in args:
        cwd = args[args.index("-od") + 1]
    done = subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)
    return done


def store(box, *files, extra=()):
    result = dcmtk("storescu", "-aet", SCU_AE, "-aec", "PACSBOX", *extra, "127.0.0.1", box.dicom_port, *files)
    assert result.returncode == 0, result.stderr
    return files


def originals_by_uid(files):
    return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f.read_bytes() for f in files}


def received_by_uid(files):
    return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f.read_bytes() for f in files}


def test_move_study_to_movescu_is_byte_identical(box, tmp_path):
    files = synth.write_study(tmp_path / "in", n_series=2, per_series=2, patient_id="MOVE1")
    store(box, *files)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    out = tmp_path / "out"
    out.mkdir()
    moved = dcmtk("movescu", "-v", "-S", "+B", "-aet", SCU_AE, "-aec", "PACSBOX", "-aem", SCU_AE,
                  "--port", box.scu_port, "-od", out, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                  "127.0.0.1", box.dicom_port)
    assert moved.returncode == 0, moved.stderr
    got = received_by_uid(out.iterdir())
    want = readback.stored(box.data_dir)  # what the box received and keeps
    assert set(got) == set(originals_by_uid(files))
    for uid, raw in got.items():
        assert dataset_bytes(raw) == dataset_bytes(want[uid]), uid
    assert "Received Move Response 4 (Pending)" in moved.stderr
    assert "Received Final Move Response (Success)" in moved.stderr


def test_move_patient_root_and_image_level(box, tmp_path):
    files = synth.write_study(tmp_path / "in", n_series=1, per_series=3, patient_id="MOVEPAT")
    store(box, *files)
    out = tmp_path / "out"
    out.mkdir()
    moved = dcmtk("movescu", "-P", "-aet", SCU_AE, "-aec", "PACSBOX", "-aem", SCU_AE, "--port", box.scu_port,
                  "-od", out, "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=MOVEPAT", "127.0.0.1",
                  box.dicom_port)
    assert moved.returncode == 0, moved.stderr
    assert len(list(out.iterdir())) == 3
    ds = pydicom.dcmread(files[1])
    out2 = tmp_path / "out2"
    out2.mkdir()
    moved = dcmtk("movescu", "-S", "-aet", SCU_AE, "-aec", "PACSBOX", "-aem", SCU_AE, "--port", box.scu_port,
                  "-od", out2, "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                  "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}", "-k", f"SOPInstanceUID={ds.SOPInstanceUID}",
                  "127.0.0.1", box.dicom_port)
    assert moved.returncode == 0, moved.stderr
    assert list(received_by_uid(out2.iterdir())) == [ds.SOPInstanceUID]


def test_move_to_unknown_destination_is_refused(box, tmp_path):
    files = synth.write_study(tmp_path / "in", n_series=1, per_series=1, patient_id="MOVE2")
    store(box, *files)
    moved = dcmtk("movescu", "-S", "-aet", SCU_AE, "-aec", "PACSBOX", "-aem", "NOBODY", "--port", box.scu_port,
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={pydicom.dcmread(files[0]).StudyInstanceUID}",
                  "127.0.0.1", box.dicom_port)
    assert "MoveDestinationUnknown" in moved.stderr, moved.stderr


@pytest.mark.parametrize("max_pdu", [(), ("--max-pdu", "4096")])  # 4096: each object in ~10 PDUs
def test_get_with_getscu_is_byte_identical(box, tmp_path, max_pdu):
    files = synth.write_study(tmp_path / "in", n_series=1, per_series=3, patient_id="GET1")
    store(box, *files)
    out = tmp_path / "out"
    out.mkdir()
    logged = "C-GET x1; sent 3, failed 0"  # the association log counts the C-STORE-RSPs (outbound.py reads them)
    before = box.log().count(logged)
    got = dcmtk("getscu", "-S", "+B", *max_pdu, "-aet", SCU_AE, "-aec", "PACSBOX", "-od", out,
                "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={pydicom.dcmread(files[0]).StudyInstanceUID}", "127.0.0.1", box.dicom_port)
    assert got.returncode == 0, got.stderr
    received = received_by_uid(out.iterdir())
    stored = readback.stored(box.data_dir)
    assert set(received) == set(originals_by_uid(files))
    for uid, raw in received.items():
        assert dataset_bytes(raw) == dataset_bytes(stored[uid])
    wait_until(lambda: box.log().count(logged) > before, 10, what="the C-GET association's log line")


def test_compressed_ultrasound_to_uncompressed_only_peers(box, tmp_path):
    """JPEG baseline cine and JPEG 2000 lossless US: getscu and storescp (C-MOVE) accept only uncompressed."""
    cine = synth.make_instance("US_CINE_JPEG", patient_id="USJ")
    j2k = synth.make_instance("US_J2K", patient_id="USJ", study_uid=cine.StudyInstanceUID)
    paths = []
    for ds in (cine, j2k):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    # dcmsend proposes each file's own transfer syntax
    sent = dcmtk("dcmsend", "-aet", SCU_AE, "-aec", "PACSBOX", "127.0.0.1", box.dicom_port, *paths)
    assert sent.returncode == 0, sent.stderr
    expected = {ds.SOPInstanceUID: pydicom.dcmread(p).pixel_array for ds, p in zip((cine, j2k), paths)}

    out = tmp_path / "get"
    out.mkdir()
    got = dcmtk("getscu", "-S", "+B", "-aet", SCU_AE, "-aec", "PACSBOX", "-od", out, "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={cine.StudyInstanceUID}", "127.0.0.1", box.dicom_port)
    assert got.returncode == 0, got.stderr
    scp = StoreSCP(tmp_path / "scp", accept_all=False).start()  # storescp default: uncompressed only
    try:
        assert cli(box.data_dir, "modality", "add", "STORESCP", "127.0.0.1", str(scp.port)).returncode == 0
        moved = dcmtk("movescu", "-S", "-aet", SCU_AE, "-aec", "PACSBOX", "-aem", "STORESCP",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={cine.StudyInstanceUID}",
                      "127.0.0.1", box.dicom_port)
        assert moved.returncode == 0, moved.stderr
        moved_files = scp.files()
    finally:
        scp.stop()
    for files in (list(out.iterdir()), moved_files):
        assert len(files) == 2
        for f in files:
            ds = pydicom.dcmread(f)
            assert ds.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
            assert ds.PhotometricInterpretation == "RGB"
            want = expected[ds.SOPInstanceUID]
            if ds.SOPInstanceUID == j2k.SOPInstanceUID:  # lossless: exactly the decoded pixels
                assert np.array_equal(ds.pixel_array, want)
            else:
                assert ds.pixel_array.shape == want.shape
                assert ds.LossyImageCompression == "01"


def test_get_counts_failures_when_peer_accepts_no_usable_syntax(box, tmp_path):
    """Stored uncompressed CT, but the requestor accepts CT only as JPEG-LS: those sub-operations fail."""
    study = synth.write_study(tmp_path / "in", n_series=1, per_series=2, patient_id="GETFAIL")
    mr = synth.make_instance("MR", patient_id="GETFAIL", study_uid=pydicom.dcmread(study[0]).StudyInstanceUID)
    mr_path = tmp_path / "mr.dcm"
    mr.save_as(mr_path, enforce_file_format=True)
    store(box, *study, mr_path)

    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [JPEGLSLossless])
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    received = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    from pynetdicom import evt
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = mr.StudyInstanceUID
    responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    final_status, final_identifier = responses[-1]
    assert final_status.Status == 0xB000
    assert final_status.NumberOfCompletedSuboperations == 1
    assert final_status.NumberOfFailedSuboperations == 2
    ct_uids = {pydicom.dcmread(p).SOPInstanceUID for p in study}
    failed = final_identifier.FailedSOPInstanceUIDList
    assert set([failed] if isinstance(failed, str) else failed) == ct_uids
    assert received == [mr.SOPInstanceUID]


def test_get_series_level_patient_root(box, tmp_path):
    files = synth.write_study(tmp_path / "in", n_series=2, per_series=2, patient_id="GETSER")
    store(box, *files)
    ds = pydicom.dcmread(files[0])
    out = tmp_path / "out"
    out.mkdir()
    got = dcmtk("getscu", "-P", "-aet", SCU_AE, "-aec", "PACSBOX", "-od", out, "-k", "QueryRetrieveLevel=SERIES",
                "-k", "PatientID=GETSER", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}", "127.0.0.1", box.dicom_port)
    assert got.returncode == 0, got.stderr
    received = received_by_uid(out.iterdir())
    assert set(received) == {d.SOPInstanceUID for d in map(pydicom.dcmread, files)
                             if d.SeriesInstanceUID == ds.SeriesInstanceUID}
