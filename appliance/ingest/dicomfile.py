"""Reading and validating one incoming DICOM object, before anything is stored.

``parse`` accepts Part 10 files (with preamble and file meta), and bare
datasets without a preamble (as some CDs and older modalities write them).
A bare dataset gets a generated file meta in front of its unchanged bytes, so
the archive always holds a Part 10 file whose dataset is byte-identical to the
input. Anything else gets an ``InvalidObject`` with a reason a person can act on.
"""
from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.charset import TEXT_VR_DELIMS, convert_encodings, decode_bytes
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from ..errors import ApplianceError, InvalidObject
from ..records.instances import InstanceAttributes
from ..records.values import QueryError, normalize_time
from .quickread import read_plain

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFER_SIZE = 4 * 1024 * 1024  # larger values are checked for presence, not read


@dataclass
class ParsedObject:
    dataset: Dataset  # only the elements parse reads (READ_TAGS); pixel data's value may be unread
    attributes: InstanceAttributes
    prefix: bytes  # generated file meta to put before the input (b"" when it had its own)


def _check_uid(value: str, keyword: str) -> str:
    value = str(value or "").strip().rstrip("\0")
    if not value:
        raise InvalidObject(f"{keyword} is missing: every stored object needs one")
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise InvalidObject(f"{keyword} is not a valid UID (digits and dots, at most 64 characters)")
    return value


# Values of these VRs are text, whatever the transfer syntax.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                      "UR", "UT"})


def _value(ds: Dataset, tag: BaseTag, encodings: list[str]):
    """The value of ``tag`` (None when absent); text as one string, several values joined by backslashes.

    Text is decoded straight from the bytes read, with pydicom's own character set decoder,
    and a single US value is read as the integer it is: building pydicom's element objects for
    the ~30 values the index keeps cost more than reading the file. Anything else (other binary
    VRs, an explicit VR that differs from the dictionary's, such as UN) goes through pydicom's
    full conversion.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    vr = _DICTIONARY_VR[tag]
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and elem.VR in (None, vr):
        # (VR None: implicit VR, the dictionary's applies)
        if vr in TEXT_VRS:
            values = [v.strip("\0 ") for v in decode_bytes(elem.value, encodings, TEXT_VR_DELIMS).split("\\")]
            if vr == "PN":  # as pydicom's PersonName: no empty trailing component groups
                values = [v.rstrip("=") for v in values]
            return "\\".join(values)
        if vr == "US" and len(elem.value) == 2:  # Rows, Columns, Bits Allocated...: one unsigned short
            return int.from_bytes(elem.value, "little" if elem.is_little_endian else "big")
    return ds[tag].value


@functools.lru_cache(maxsize=64)
def _encodings(charset: str) -> list[str]:
    return convert_encodings(charset.split("\\") if charset else None)


def _encodings_of(ds: Dataset) -> list[str]:
    """The Python codecs for the dataset's Specific Character Set (pydicom's mapping)."""
    value = ds[CHARSET].value if CHARSET in ds else ""
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return _encodings(str(value or "").strip())


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):  # multi-valued: as DICOM writes it, A\B
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _time(value) -> str:
    text = _text(value)
    try:
        return normalize_time(text)
    except QueryError:
        return text


# What the index keeps of each instance: InstanceAttributes field, DICOM keyword, conversion.
# The four UIDs are checked (and added) separately.
_FIELDS = tuple((name, Tag(tag_for_keyword(keyword)), convert) for name, keyword, convert in (
    ("patient_id", "PatientID", _text), ("issuer", "IssuerOfPatientID", _text),
    ("patient_name", "PatientName", _text), ("birth_date", "PatientBirthDate", _text),
    ("sex", "PatientSex", _text), ("study_date", "StudyDate", _text), ("study_time", "StudyTime", _time),
    ("accession", "AccessionNumber", _text), ("study_id", "StudyID", _text),
    ("study_description", "StudyDescription", _text),
    ("referring_physician", "ReferringPhysicianName", _text), ("patient_age", "PatientAge", _text),
    ("institution", "InstitutionName", _text), ("modality", "Modality", _text),
    ("series_number", "SeriesNumber", _int), ("series_description", "SeriesDescription", _text),
    ("body_part", "BodyPartExamined", _text), ("series_date", "SeriesDate", _text),
    ("series_time", "SeriesTime", _time), ("station_name", "StationName", _text),
    ("instance_number", "InstanceNumber", _int), ("rows", "Rows", _int), ("columns", "Columns", _int),
    ("frames", "NumberOfFrames", _int), ("content_date", "ContentDate", _text),
    ("content_time", "ContentTime", _time),
))


SOP_INSTANCE_UID, SOP_CLASS_UID, STUDY_UID, SERIES_UID, CHARSET = (Tag(tag_for_keyword(k)) for k in (
    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "SpecificCharacterSet"))
PIXEL_TAGS = tuple(Tag(tag_for_keyword(k)) for k in (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "PixelDataProviderURL"))
PIXEL_DATA = PIXEL_TAGS[0]
BITS_ALLOCATED, SAMPLES_PER_PIXEL, PHOTOMETRIC, ROWS, COLUMNS, NUMBER_OF_FRAMES = (
    Tag(tag_for_keyword(k)) for k in ("BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation", "Rows",
                                      "Columns", "NumberOfFrames"))
# The only elements parse reads; the rest of the dataset is stepped over without decoding it.
READ_TAGS = sorted({tag for _, tag, _ in _FIELDS} | set(PIXEL_TAGS)
                   | {SOP_INSTANCE_UID, SOP_CLASS_UID, STUDY_UID, SERIES_UID, CHARSET, BITS_ALLOCATED,
                      SAMPLES_PER_PIXEL, PHOTOMETRIC})
TRANSFER_SYNTAX, MEDIA_SOP_INSTANCE = Tag(0x00020010), Tag(0x00020003)
READ_SET, PIXEL_SET = frozenset(READ_TAGS), frozenset(PIXEL_TAGS)  # of pixels, parse needs no value
_DICTIONARY_VR = {tag: dictionary_VR(tag) for tag in READ_TAGS}
TRUNCATED_PIXELS = "the pixel data is truncated"  # one reason, whichever way the object came in


def _check_complete(ds: Dataset, src: BinaryIO, total_size: int) -> None:
    """Raise if the file ends inside a value (a truncated file).

    pydicom skips values it was not asked for (and defers large ones) by seeking, and
    reads a short value without complaint: either way the file was cut if reading went
    past its end, or if the last value read is shorter than its declared length (only
    the last one can be: elements are read in file order).
    """
    if src.tell() > total_size:
        raise InvalidObject("the file is truncated: it ends inside its data")
    last_tag = next(reversed(ds.keys()), None)
    if last_tag is None:
        return
    elem = ds.get_item(last_tag, keep_deferred=True)
    length = getattr(elem, "length", None)
    if length in (None, UNDEFINED_LENGTH):
        return
    value = getattr(elem, "value", None)
    tell = getattr(elem, "value_tell", None)
    if value is None and tell is not None:
        if tell + length > total_size:
            raise InvalidObject(_ends_inside(last_tag))
    elif isinstance(value, (bytes, bytearray)) and len(value) != length:
        raise InvalidObject(_ends_inside(last_tag))


def _ends_inside(tag) -> str:
    if tag == PIXEL_DATA:
        return f"{TRUNCATED_PIXELS}: the file ends inside it"
    return "the file is truncated: it ends inside its data"


def _check_pixel_length(ds: Dataset, encodings: list[str]) -> None:
    """Native pixel data must hold Rows x Columns x frames x samples x BitsAllocated bits (PS3.5 8.1.1).

    A file cut inside its pixel data is caught by ``_check_complete``; a sender that reads such a
    file and sends what it has (storescu, a STOW client) declares the shorter length, so the
    element is whole and only this count shows what is missing.
    """
    if PIXEL_DATA not in ds:
        return
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    length = getattr(elem, "length", None)
    if length in (None, UNDEFINED_LENGTH):  # encapsulated (compressed) frames: their decoder checks them
        return
    rows, columns, bits, samples, frames = (_int(_value(ds, tag, encodings)) for tag in (
        ROWS, COLUMNS, BITS_ALLOCATED, SAMPLES_PER_PIXEL, NUMBER_OF_FRAMES))
    samples, frames = samples or 1, frames or 1
    if not rows or not columns or not bits:
        return
    if samples == 3 and _text(_value(ds, PHOTOMETRIC, encodings)) == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by two pixels (PS3.3 C.7.6.3.1.2)
    needed = (rows * columns * frames * samples * bits + 7) // 8
    if length < needed:
        raise InvalidObject(f"{TRUNCATED_PIXELS}: {length} bytes, where {rows} rows x {columns} columns x "
                            f"{frames} frame(s) x {samples} sample(s) x {bits} bits need {needed}")


@functools.lru_cache(maxsize=512)
def _is_image_class(sop_class: str) -> bool:
    return UID(sop_class).name.endswith("Image Storage")


def _check_has_pixels(ds: Dataset, sop_class: str) -> None:
    """An image object cut off at an element boundary parses cleanly; its missing pixels give it away."""
    if _is_image_class(sop_class) and not any(tag in ds for tag in PIXEL_TAGS):
        raise InvalidObject("the file is truncated or incomplete: it is an image object without pixel data")


def parse(src: BinaryIO, size: int) -> ParsedObject:
    """Parse and validate ``src`` (seekable, ``size`` bytes); leave it at position 0."""
    try:
        return _parse(src, size)
    except ApplianceError:
        raise
    except Exception as exc:  # pydicom converts values lazily: a bad VR or value can raise on first access
        raise InvalidObject(f"not a readable DICOM file ({_kind(exc)} while reading its attributes)") from None
    finally:
        src.seek(0)


def _kind(exc: Exception) -> str:
    """The error's class for a reason line (zlib's is plainly called ``error``)."""
    return "damaged deflated data (zlib)" if exc.__class__.__module__ == "zlib" else exc.__class__.__name__


def _parse(src: BinaryIO, size: int) -> ParsedObject:
    prefix = b""
    ds = read_plain(src, size, READ_SET, PIXEL_SET)  # the common case, proven whole on the way
    if ds is None:
        ds = _read_with_pydicom(src, size)
    src.seek(0)

    encodings = _encodings_of(ds)
    sop_uid = _check_uid(_value(ds, SOP_INSTANCE_UID, encodings), "SOPInstanceUID")
    sop_class = _check_uid(_value(ds, SOP_CLASS_UID, encodings), "SOPClassUID")
    study_uid = _check_uid(_value(ds, STUDY_UID, encodings), "StudyInstanceUID")
    series_uid = _check_uid(_value(ds, SERIES_UID, encodings), "SeriesInstanceUID")
    _check_has_pixels(ds, sop_class)
    _check_pixel_length(ds, encodings)

    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta[TRANSFER_SYNTAX].value or "") if meta and TRANSFER_SYNTAX in meta else ""
    if not meta or TRANSFER_SYNTAX not in meta:
        # A bare dataset: pydicom guessed its encoding; record that in a generated meta.
        transfer_syntax = str(_guessed_syntax(ds))
        prefix = _file_meta_prefix(sop_class, sop_uid, transfer_syntax)
    elif MEDIA_SOP_INSTANCE in meta and str(meta[MEDIA_SOP_INSTANCE].value).strip("\0 ") != sop_uid:
        raise InvalidObject("the file meta names a different SOP Instance UID than the dataset")
    else:
        _check_transfer_syntax(ds, transfer_syntax.strip("\0 "))

    values = {name: convert(_value(ds, tag, encodings)) for name, tag, convert in _FIELDS}
    attributes = InstanceAttributes(sop_uid=sop_uid, sop_class_uid=sop_class, study_uid=study_uid,
                                    series_uid=series_uid, transfer_syntax=transfer_syntax, **values)
    return ParsedObject(ds, attributes, prefix)


def _read_with_pydicom(src: BinaryIO, size: int) -> Dataset:
    """Everything ``read_plain`` leaves: pydicom reads the wanted elements, guessing what it must
    (no preamble, another encoding than declared), and the result is checked for truncation."""
    src.seek(0)
    try:
        try:
            ds = pydicom.dcmread(src, defer_size=DEFER_SIZE, specific_tags=READ_TAGS)
        except InvalidDicomError:
            src.seek(0)
            ds = pydicom.dcmread(src, defer_size=DEFER_SIZE, specific_tags=READ_TAGS, force=True)
            if SOP_INSTANCE_UID not in ds or SOP_CLASS_UID not in ds:
                raise InvalidObject("not a DICOM file (no DICOM header or SOP identifiers found)") from None
        _check_complete(ds, src, size)
    except InvalidObject:
        raise
    except EOFError:
        raise InvalidObject("the file is truncated: it ends inside its data") from None
    except Exception as exc:  # pydicom raises many types on malformed input
        raise InvalidObject(f"not a readable DICOM file ({_kind(exc)})") from None
    finally:
        src.seek(0)
    return ds


def _check_transfer_syntax(ds: Dataset, transfer_syntax: str) -> None:
    """The declared transfer syntax must be one we know and the one the data is really in: the
    object is kept and sent on under it, and under a wrong one a receiver reads garbage."""
    if not UID_PATTERN.match(transfer_syntax) or not UID(transfer_syntax).is_transfer_syntax:
        raise InvalidObject(f"the file meta declares an unknown transfer syntax ({transfer_syntax[:64]!r}): "
                            "the appliance could neither show nor send on such an object")
    syntax = UID(transfer_syntax)
    # pydicom reads on in the encoding it finds (with a warning); an element it read raw shows which:
    # explicit VR elements carry their VR. (Wrong endianness garbles the tags: no SOP UIDs, refused earlier.)
    sample = ds.get_item(SOP_CLASS_UID, keep_deferred=True)
    if isinstance(sample, RawDataElement) and (sample.VR is None) != syntax.is_implicit_VR:
        found = "implicit VR" if sample.VR is None else "explicit VR"
        raise InvalidObject(f"the file meta declares the transfer syntax {syntax.name or syntax}, but the data "
                            f"is encoded in {found}")
    pixels = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if pixels is not None and (pixels.length == UNDEFINED_LENGTH) != syntax.is_encapsulated:
        raise InvalidObject(f"the file meta declares the transfer syntax {syntax.name or syntax}, but the pixel "
                            f"data is {'compressed' if pixels.length == UNDEFINED_LENGTH else 'not compressed'}")


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
