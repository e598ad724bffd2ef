"""C-ECHO and C-STORE with dcmtk peers; the archive must give back exactly the bytes that were sent.

dcmtk re-encodes a file's dataset when it sends it (it drops trailing padding
and may choose other length encodings), so the sources are first written by
dcmtk itself (``dcmconv``): then the dataset on the wire is byte-for-byte the
file's, and the archive must hold exactly those bytes. The file meta is made by
the receiver (PS3.10: the sender's meta never crosses the network), so of the
meta we assert the identifying fields.
"""
from __future__ import annotations

import io
import threading
from pathlib import Path

import pydicom
import pytest

import readback
import synth
from helpers import dcmtk

AE = ("-aec", "PACSBOX")


def write_source(directory: Path, kind: str, convert: tuple[str, ...] = (), compress: tuple[str, ...] = (),
                 **identity) -> tuple[str, Path]:
    """A synthetic instance written by dcmtk (optionally converted or compressed); (SOP UID, path)."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = synth.make_instance(kind, **identity)
    if 0xFFFCFFFC in ds:  # DataSetTrailingPadding: dcmtk never sends it
        del ds[0xFFFCFFFC]
    raw = directory / f".{ds.SOPInstanceUID}.raw"
    ds.save_as(raw, enforce_file_format=True)
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    tool = ("dcmcjpeg", "+un", *compress) if compress else ("dcmconv", *convert)
    done = dcmtk(*tool, raw, path)
    assert done.returncode == 0, done.stderr
    raw.unlink()
    return str(ds.SOPInstanceUID), path


def assert_stored_as_sent(data_dir: Path, sent: dict[str, Path], reference: dict[str, bytes] | None = None) -> None:
    """Every sent instance is indexed, and its archived dataset is byte-identical to what was sent."""
    got = readback.stored(data_dir)
    for uid, path in sent.items():
        assert uid in got, f"{path.name} was acknowledged but is not in the index"
        expected = (reference or {}).get(uid, path.read_bytes())
        assert readback.dataset_bytes(got[uid]) == readback.dataset_bytes(expected), f"{path.name} differs"
        meta = pydicom.dcmread(io.BytesIO(got[uid]), stop_before_pixels=True).file_meta
        src_meta = pydicom.dcmread(io.BytesIO(expected), stop_before_pixels=True).file_meta
        assert meta.MediaStorageSOPInstanceUID == uid
        assert meta.MediaStorageSOPClassUID == src_meta.MediaStorageSOPClassUID
        assert meta.TransferSyntaxUID == src_meta.TransferSyntaxUID


def test_echoscu(shared_server):
    done = dcmtk("echoscu", "-v", *AE, "127.0.0.1", shared_server.dicom_port)
    assert done.returncode == 0, done.stderr
    assert "Received Echo Response (Success)" in done.stderr


def test_storescu_uncompressed(shared_server, tmp_path):
    sent = dict(write_source(tmp_path / "src", "CT", patient_id="STORE-U", instance_number=i) for i in range(3))
    uid, path = write_source(tmp_path / "src", "MR", patient_id="STORE-U")
    sent[uid] = path
    done = dcmtk("storescu", *AE, "127.0.0.1", shared_server.dicom_port, *sent.values())
    assert done.returncode == 0, done.stderr
    assert_stored_as_sent(shared_server.data_dir, sent)


def test_identical_resend_stores_nothing_twice(server, tmp_path):
    sent = dict(write_source(tmp_path / "src", "CT", patient_id="STORE-AGAIN", instance_number=i) for i in range(2))
    for _ in range(2):
        done = dcmtk("storescu", "-v", *AE, "127.0.0.1", server.dicom_port, *sent.values())
        assert done.returncode == 0 and done.stderr.count("Received Store Response (Success)") == 2, done.stderr
    with readback.opened(server.data_dir) as (archive, _index):
        assert len(list(archive.list_ids())) == 2
    assert_stored_as_sent(server.data_dir, sent)


@pytest.mark.parametrize("kind, convert, option", [
    ("MR", ("+ti",), "-xi"),  # implicit VR little endian, proposed alone
    ("MR", ("+tb",), "-xb"),  # explicit VR big endian, proposed first
])
def test_storescu_other_uncompressed_syntaxes(shared_server, tmp_path, kind, convert, option):
    uid, path = write_source(tmp_path / "src", kind, convert=convert, patient_id="STORE-TS")
    done = dcmtk("storescu", option, *AE, "127.0.0.1", shared_server.dicom_port, path)
    assert done.returncode == 0, done.stderr
    assert_stored_as_sent(shared_server.data_dir, {uid: path})


@pytest.mark.parametrize("kind, compress, option, syntax", [
    ("US", ("+eb",), "-xy", "1.2.840.10008.1.2.4.50"),  # JPEG baseline, 8-bit RGB ultrasound
    ("CT", ("+e1",), "-xs", "1.2.840.10008.1.2.4.70"),  # JPEG lossless SV1, 16-bit CT
])
def test_storescu_jpeg(shared_server, tmp_path, kind, compress, option, syntax):
    sent = dict(write_source(tmp_path / "src", kind, compress=compress, patient_id="STORE-JPEG",
                             instance_number=i) for i in range(2))
    for path in sent.values():
        assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    done = dcmtk("storescu", option, *AE, "127.0.0.1", shared_server.dicom_port, *sent.values())
    assert done.returncode == 0, done.stderr
    assert_stored_as_sent(shared_server.data_dir, sent)


MIXED = ["CT", "MR", "MR_IMPLICIT", "MR_BIG_ENDIAN", "DEFLATED", "SC_JPEG", "SC_JPEG_LOSSLESS", "MR_JPEG_LS",
         "MR_J2K", "MR_RLE", "US_CINE_JPEG", "US_J2K", "US_PALETTE"]


def test_dcmsend_mixed_folder(shared_server, tmp_path):
    src = tmp_path / "mixed"
    sent = dict(write_source(src, kind, patient_id="STORE-MIX") for kind in MIXED)
    done = dcmtk("dcmsend", "-v", *AE, "127.0.0.1", shared_server.dicom_port, "+sd", src)
    assert done.returncode == 0, done.stderr
    assert f"with status SUCCESS  : {len(MIXED)}" in done.stderr
    # dcmsend offers uncompressed data sets in one context and converts implicit VR and big endian
    # files to the explicit little endian syntax we accept; compare those with dcmtk's own conversion.
    # A deflated stream of odd length travels with one NUL byte of padding (PS3.5 A.5).
    reference = {}
    for uid, path in sent.items():
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2"):
            converted = tmp_path / f"{uid}.le"
            assert dcmtk("dcmconv", "+te", path, converted).returncode == 0
            reference[uid] = converted.read_bytes()
        elif syntax == "1.2.840.10008.1.2.1.99" and len(readback.dataset_bytes(path.read_bytes())) % 2:
            reference[uid] = path.read_bytes() + b"\0"
    assert_stored_as_sent(shared_server.data_dir, sent, reference)


def test_four_concurrent_senders(server, tmp_path):
    batches = [synth.write_study(tmp_path / f"sender{n}", n_series=1, per_series=25, patient_id=f"CONC{n}")
               for n in range(4)]
    results: list = [None] * 4

    def send(n: int) -> None:
        results[n] = dcmtk("storescu", "-aet", f"SENDER{n}", *AE, "127.0.0.1", server.dicom_port, *batches[n])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for done in results:
        assert done is not None and done.returncode == 0, done and done.stderr
    sop_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for batch in batches for p in batch}
    with readback.opened(server.data_dir) as (archive, index):
        rows = [r for r in index.search("IMAGE", {})]
        assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(sop_uids)  # each exactly once
        assert sorted(archive.list_ids()) == sorted(r["_object_id"] for r in rows)  # no stray objects
        studies = index.search("STUDY", {"PatientID": "CONC*"})
        assert sorted(s["NumberOfStudyRelatedInstances"] for s in studies) == [25] * 4
