"""Synthetic test data: pydicom's bundled sample files with new names and UIDs.

Never real patient data. Every generated object gets fresh Study/Series/SOP
Instance UIDs, so tests can store, query and compare without collisions.
"""
from __future__ import annotations

import copy
import functools
import io
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

SAMPLES = {
    "CT": "CT_small.dcm",  # 128x128 16-bit MONOCHROME2, explicit LE
    "MR": "MR_small.dcm",  # 64x64 16-bit
    "US": "examples_rgb_color.dcm",  # 240x320 RGB ultrasound
    "US_PALETTE": "examples_palette.dcm",  # 350x800 PALETTE COLOR ultrasound
    "US_CINE_JPEG": "examples_ybr_color.dcm",  # 30-frame YBR_FULL_422 JPEG baseline ultrasound
    "US_J2K": "examples_jpeg2k.dcm",  # JPEG 2000 lossless ultrasound
    "SC_JPEG": "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline
    "SC_JPEG_LOSSLESS": "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_JPEG_LS": "MR_small_jpeg_ls_lossless.dcm",
    "MR_J2K": "MR_small_jp2klossless.dcm",
    "MR_RLE": "MR_small_RLE.dcm",
    "MR_BIG_ENDIAN": "MR_small_bigendian.dcm",
    "MR_IMPLICIT": "MR_small_implicit.dcm",
    "DEFLATED": "image_dfl.dcm",
}


def bundled_files(pattern: str, folder: str = "test_files") -> list[str]:
    """pydicom's bundled sample files matching `pattern` (folder: test_files or charset_files).

    Not pydicom's get_testdata_files(): that also lists the pydicom-data files and
    downloads each one it has not cached (about 80 requests), which makes the suite
    depend on the network.
    """
    return sorted(str(p) for p in (Path(DATA_ROOT) / folder).glob(pattern))


@functools.lru_cache(maxsize=None)
def _sample(name: str) -> Dataset:
    path = get_testdata_file(SAMPLES.get(name, name), download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom sample {name} is not bundled")
    return pydicom.dcmread(path)


def make_instance(kind: str = "CT", *, patient_name: str = "TEST^PATIENT", patient_id: str = "PID0001",
                  study_uid: str | None = None, series_uid: str | None = None, instance_number: int = 1,
                  study_date: str = "20260101", accession: str = "", modality: str | None = None,
                  study_description: str = "", series_number: int = 1, birth_date: str = "19700101",
                  sex: str = "O") -> Dataset:
    """A new instance with fresh UIDs (unless given) and a synthetic identity."""
    ds = copy.deepcopy(_sample(kind))
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = instance_number
    ds.SeriesNumber = series_number
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyDescription = study_description
    ds.StudyID = "1"
    ds.ReferringPhysicianName = "REFERRER^TEST"
    for keyword in ("OtherPatientIDs", "OtherPatientNames", "PatientAddress", "InstitutionName"):
        if keyword in ds:
            delattr(ds, keyword)
    if modality:
        ds.Modality = modality
    return ds


def write_study(directory: Path, n_series: int = 2, per_series: int = 3, kind: str = "CT", **identity) -> list[Path]:
    """Write one study of ``n_series`` x ``per_series`` instances; return the file paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = identity.pop("study_uid", None) or generate_uid()
    paths = []
    for s in range(n_series):
        series_uid = generate_uid()
        for i in range(per_series):
            ds = make_instance(kind, study_uid=study_uid, series_uid=series_uid, instance_number=i + 1,
                               series_number=s + 1, **identity)
            path = directory / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def tiny_sr(patient: int, study_uid: str, series_uid: str, number: int, sop_uid: str | None = None,
            text: str = "") -> bytes:
    """A small (~1 KB), valid non-image object (a Basic Text SR without content) with a synthetic identity:
    fast to make by the thousand (tests/reliability/test_index_rebuild.py, bench/rebuild_bench.py)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = sop_uid = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", sop_uid
    ds.PatientName, ds.PatientID = f"REBUILD^P{patient}", f"RB{patient:05d}"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "101500", f"A{patient}", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 1, number
    ds.ContentDate, ds.ContentTime = "20260101", "101500"
    ds.StudyDescription = text or "rebuild test"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
