"""Bad input gets a failure status with a reason, never takes the server down, and stores nothing.

A pynetdicom SCU sends the raw bytes that follow a file's meta
(``STORE_SEND_CHUNKED_DATASET``), so garbage and truncated data sets reach the
server exactly as a broken modality would send them.
"""
from __future__ import annotations

import io
import os

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

import readback
import synth
from helpers import Server, dcmtk, init_data_dir, run_cli, tmpfs


def part10_with(dataset_bytes: bytes, sop_uid: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta)
    return buf.getvalue() + dataset_bytes


def garbage_file(path) -> None:
    path.write_bytes(part10_with(os.urandom(4000), generate_uid()))


def truncated_file(path) -> None:
    ds = synth.make_instance("CT", patient_id="BAD-INPUT")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * 0.6)])  # ends inside the pixel data


def send_raw(srv, path, monkeypatch) -> pydicom.Dataset:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def contents(data_dir) -> tuple:
    """What the data directory holds: index rows, archive objects, unfinished writes."""
    with readback.opened(data_dir) as (archive, index):
        return (index.count("IMAGE", {}), sorted(archive.list_ids()), sorted(archive._tmp_dir.iterdir()))


@pytest.mark.parametrize("make", [garbage_file, truncated_file], ids=["garbage", "truncated"])
def test_bad_data_set_gets_cannot_understand(shared_server, tmp_path, monkeypatch, make):
    server = shared_server
    before = contents(server.data_dir)
    path = tmp_path / "bad.dcm"
    make(path)
    status = send_raw(server, path, monkeypatch)
    assert 0xC000 <= status.Status <= 0xCFFF, hex(status.Status)
    assert status.get("ErrorComment"), "a failure must say why"
    if make is truncated_file:
        assert "truncated" in status.ErrorComment
    # the server is still up and serving, and nothing of the bad object was kept
    assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", server.dicom_port).returncode == 0
    assert contents(server.data_dir) == before
    assert server.proc.poll() is None


def test_storescu_truncated_file(shared_server, tmp_path):
    """dcmtk refuses to read a truncated file itself; the server never sees a partial object."""
    before = contents(shared_server.data_dir)
    path = tmp_path / "cut.dcm"
    truncated_file(path)
    done = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", shared_server.dicom_port, path)
    assert done.returncode != 0
    assert contents(shared_server.data_dir) == before


def test_disk_below_reserve_gets_out_of_resources(tmp_path):
    data = init_data_dir(tmp_path / "data")
    free_mb = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize >> 20
    srv = Server(data, env={"PACS_STORAGE_RESERVE_MB": str(free_mb + 10_000)}).start()
    try:
        files = synth.write_study(tmp_path / "src", n_series=1, per_series=2, patient_id="FULL-DISK")
        done = dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files)
        assert "Received Store Response (Refused: OutOfResources)" in done.stderr, done.stderr
        assert "Success" not in done.stderr
        assert "reserve" in srv.log()
        assert contents(data) == (0, [], [])
    finally:
        srv.kill()


def test_tiny_filesystem_fills_up(tmp_path):
    """The whole data directory on a 4 MiB tmpfs, no reserve: stores succeed until the disk is full,
    then storescu gets 0xA700, the server stays up, and what was acknowledged is intact."""
    with tmpfs(tmp_path / "tiny", "4m", mode="0750") as tiny:
        init_data_dir(tiny)
        srv = Server(tiny, env={"PACS_STORAGE_RESERVE_MB": "0"}).start()
        try:
            files = synth.write_study(tmp_path / "src", n_series=1, per_series=150, patient_id="TINY-FS")
            sent = dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, *files)
            assert "Received Store Response (Refused: OutOfResources)" in sent.stderr, sent.stderr[-2000:]
            acked = sent.stderr.count("Received Store Response (Success)")
            assert acked > 0
            assert dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port).returncode == 0
            assert srv.proc.poll() is None
        finally:
            srv.kill()
        count, ids, unfinished = contents(tiny)
        assert count >= acked and len(ids) == count and unfinished == []


def short_pixels_file(path) -> None:
    """A whole file whose pixel data holds half of Rows x Columns x BitsAllocated (what a sender that read a
    cut file sends on: the element is complete, its value too short)."""
    ds = synth.make_instance("CT", patient_id="BAD-INPUT")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(path, enforce_file_format=True)


def test_short_pixel_data_is_refused_the_same_way_everywhere(shared_server, tmp_path, monkeypatch):
    before = contents(shared_server.data_dir)
    path = tmp_path / "short.dcm"
    short_pixels_file(path)
    status = send_raw(shared_server, path, monkeypatch)  # C-STORE
    assert status.Status == 0xC000 and status.ErrorComment.startswith("the pixel data is truncated"), status
    cut = tmp_path / "cut.dcm"
    truncated_file(cut)  # a file cut inside its pixel data: the same reason
    assert send_raw(shared_server, cut, monkeypatch).ErrorComment.startswith("the pixel data is truncated")
    done = run_cli("import", "--data", shared_server.data_dir, path, check=False)  # one-shot import
    assert "the pixel data is truncated: 16384 bytes" in done.stdout + done.stderr, done.stdout + done.stderr
    assert contents(shared_server.data_dir) == before
