"""Reading and validating one incoming DICOM object, before anything is stored.

``parse`` accepts Part 10 files (with preamble and file meta), and bare
datasets without a preamble (as some CDs and older modalities write them).
A bare dataset gets a generated file meta in front of its unchanged bytes, so
the archive always holds a Part 10 file whose dataset is byte-identical to the
input. Anything else gets an ``InvalidObject`` with a reason a person can act on.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from .errors import ApplianceError, InvalidObject
from .index.records import InstanceAttributes

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFER_SIZE = 4 * 1024 * 1024  # larger values are checked for presence, not read


@dataclass
class ParsedObject:
    dataset: Dataset  # header only; large values deferred
    attributes: InstanceAttributes
    prefix: bytes  # generated file meta to put before the input (b"" when it had its own)


def _check_uid(value: str, keyword: str) -> str:
    value = str(value or "").strip().rstrip("\0")
    if not value:
        raise InvalidObject(f"{keyword} is missing: every stored object needs one")
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise InvalidObject(f"{keyword} is not a valid UID (digits and dots, at most 64 characters)")
    return value


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or getattr(value, "VM", 1) > 1 and not isinstance(value, str):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _time(ds: Dataset, keyword: str) -> str:
    from .index.query import QueryError, normalize_time

    try:
        return normalize_time(_text(ds, keyword))
    except QueryError:
        return _text(ds, keyword)


def _check_complete(ds: Dataset, total_size: int) -> None:
    """Raise if any top-level value is shorter than its declared length (a truncated file)."""
    for elem in ds.elements():
        length = getattr(elem, "length", None)
        if length in (None, UNDEFINED_LENGTH):
            continue
        value = getattr(elem, "value", None)
        tell = getattr(elem, "value_tell", None)
        if value is None and tell is not None:
            if tell + length > total_size:
                raise InvalidObject("the file is truncated: it ends inside its data")
        elif isinstance(value, (bytes, bytearray)) and len(value) != length:
            raise InvalidObject("the file is truncated: it ends inside its data")


PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "PixelDataProviderURL")


def _check_has_pixels(ds: Dataset, sop_class: str) -> None:
    """An image object cut off at an element boundary parses cleanly; its missing pixels give it away."""
    from pydicom.uid import UID

    if UID(sop_class).name.endswith("Image Storage") and not any(k in ds for k in PIXEL_KEYWORDS):
        raise InvalidObject("the file is truncated or incomplete: it is an image object without pixel data")


def parse(src: BinaryIO, size: int) -> ParsedObject:
    """Parse and validate ``src`` (seekable, ``size`` bytes); leave it at position 0."""
    try:
        return _parse(src, size)
    except ApplianceError:
        raise
    except Exception as exc:  # pydicom converts values lazily: a bad VR or value can raise on first access
        raise InvalidObject(f"not a readable DICOM file ({exc.__class__.__name__} while reading its "
                            "attributes)") from None
    finally:
        src.seek(0)


def _parse(src: BinaryIO, size: int) -> ParsedObject:
    src.seek(0)
    prefix = b""
    try:
        try:
            ds = pydicom.dcmread(src, defer_size=DEFER_SIZE)
        except InvalidDicomError:
            src.seek(0)
            ds = pydicom.dcmread(src, defer_size=DEFER_SIZE, force=True)
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                raise InvalidObject("not a DICOM file (no DICOM header or SOP identifiers found)") from None
        _check_complete(ds, size)
    except InvalidObject:
        raise
    except EOFError:
        raise InvalidObject("the file is truncated: it ends inside its data") from None
    except Exception as exc:  # pydicom raises many types on malformed input
        raise InvalidObject(f"not a readable DICOM file ({exc.__class__.__name__})") from None
    finally:
        src.seek(0)

    sop_uid = _check_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
    sop_class = _check_uid(ds.get("SOPClassUID"), "SOPClassUID")
    study_uid = _check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
    series_uid = _check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
    _check_has_pixels(ds, sop_class)

    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta else ""
    if not meta or "TransferSyntaxUID" not in meta:
        # A bare dataset: pydicom guessed its encoding; record that in a generated meta.
        transfer_syntax = str(_guessed_syntax(ds))
        prefix = _file_meta_prefix(sop_class, sop_uid, transfer_syntax)
    elif str(meta.get("MediaStorageSOPInstanceUID", sop_uid)).strip("\0 ") != sop_uid:
        raise InvalidObject("the file meta names a different SOP Instance UID than the dataset")

    attributes = InstanceAttributes(
        patient_id=_text(ds, "PatientID"),
        issuer=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        study_uid=study_uid,
        study_date=_text(ds, "StudyDate"),
        study_time=_time(ds, "StudyTime"),
        accession=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        patient_age=_text(ds, "PatientAge"),
        institution=_text(ds, "InstitutionName"),
        series_uid=series_uid,
        modality=_text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        body_part=_text(ds, "BodyPartExamined"),
        series_date=_text(ds, "SeriesDate"),
        series_time=_time(ds, "SeriesTime"),
        station_name=_text(ds, "StationName"),
        sop_uid=sop_uid,
        sop_class_uid=sop_class,
        instance_number=_int(ds, "InstanceNumber"),
        transfer_syntax=transfer_syntax,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        frames=_int(ds, "NumberOfFrames"),
        content_date=_text(ds, "ContentDate"),
        content_time=_time(ds, "ContentTime"),
    )
    return ParsedObject(ds, attributes, prefix)


def _guessed_syntax(ds: Dataset) -> str:
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    implicit = getattr(ds, "is_implicit_VR", True)
    little = getattr(ds, "is_little_endian", True)
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _file_meta_prefix(sop_class: str, sop_uid: str, transfer_syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()
