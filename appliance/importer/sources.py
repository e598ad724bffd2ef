"""What is on disk, turned into entries to ingest: loose files, ZIP members, DICOMDIR media.

- A loose file is one entry, whatever its name or extension (DICOM with or
  without a preamble is the ingest path's business).
- A ZIP (recognised by its signature, not its name) gives one entry per member,
  in any nested folder. Members are never extracted to disk: small ones are read
  into memory, large ones are streamed from the ZIP (zipfile's member streams
  are seekable). A member whose declared size is above the cap is refused, and
  zipfile never returns more than the declared size, so a ZIP bomb cannot
  exhaust memory or disk. Member names are only labels, so "../" in a name
  cannot write anywhere. A ZIP inside a ZIP is opened in memory, one level deep.
- A DICOMDIR is read record by record: each record with a Referenced File ID is
  one entry, carrying the SOP Instance UID the DICOMDIR names. Files in the
  media's folder tree that the DICOMDIR does not list are not guessed at.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import pydicom

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member, or an empty archive
IN_MEMORY_MAX = 64 << 20  # ZIP members up to this size are read into memory; larger ones are streamed
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
# Names that are work in progress or desktop litter, never imported nor moved.
IGNORED_SUFFIXES = (".part", ".partial", ".crdownload", ".tmp", ".swp", ".filepart")


class SourceError(Exception):
    """A whole source cannot be read (a damaged ZIP, an unreadable DICOMDIR); the message is plain words."""


@dataclass
class Entry:
    """One object to ingest."""

    label: str  # for people: a path, or "archive.zip: folder/member"
    opener: Callable[[], tuple[BinaryIO, int]]  # a fresh seekable stream and its size
    path: Path | None = None  # the file on disk, when the entry is a whole file
    sop_uid: str = ""  # from a DICOMDIR record: lets a missing file be recognised as already stored

    def open(self) -> tuple[BinaryIO, int]:
        return self.opener()


@dataclass
class Source:
    """One thing a person dropped or named: a file, a ZIP, or a DICOMDIR and the files it lists."""

    kind: str  # "file", "zip", "media"
    path: Path  # the file, the ZIP, or the DICOMDIR
    entries: list[Entry] = field(default_factory=list)
    unlisted: list[Path] = field(default_factory=list)  # media: files in the tree the DICOMDIR does not list
    error: str = ""  # set when the source as a whole cannot be read
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()


def is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def is_dicomdir_name(name: str) -> bool:
    return name.upper().split(";")[0] == "DICOMDIR"


def looks_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in ZIP_MAGIC
    except OSError:
        return False


def _open_file(path: Path) -> tuple[BinaryIO, int]:
    fh = open(path, "rb")
    return fh, os.fstat(fh.fileno()).st_size


def file_entry(path: Path, label: str | None = None, sop_uid: str = "") -> Entry:
    return Entry(label or str(path), lambda: _open_file(path), path=path, sop_uid=sop_uid)


def source_for_file(path: Path, member_max_bytes: int, label: str | None = None) -> Source:
    """A loose file: a ZIP by its signature, a DICOMDIR by its name, else one object."""
    if is_dicomdir_name(path.name):
        return media_source(path, label_root=None)
    if looks_like_zip(path):
        return zip_source(path, member_max_bytes, label=label)
    return Source("file", path, [file_entry(path, label)])


# -- ZIP ------------------------------------------------------------------------------------------

def zip_source(path: Path, member_max_bytes: int, label: str | None = None) -> Source:
    source = Source("zip", path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        source.error = f"the ZIP archive cannot be read ({_plain(exc)})"
        return source
    source.closers.append(zf.close)
    try:
        source.entries = _zip_entries(zf, label or str(path), member_max_bytes, depth=0)
    except SourceError as exc:
        source.error = str(exc)
    return source


def _zip_entries(zf: zipfile.ZipFile, label: str, member_max_bytes: int, depth: int) -> list[Entry]:
    try:
        members = [m for m in zf.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SourceError(f"the ZIP archive cannot be read ({_plain(exc)})") from None
    entries: list[Entry] = []
    for info in members:
        name = info.filename
        base = name.rsplit("/", 1)[-1]
        if not base or is_ignored(base) or base.startswith("__MACOSX") or name.startswith("__MACOSX/"):
            continue
        member_label = f"{label}: {name}"
        if is_dicomdir_name(base):
            continue  # the index of a CD image; its objects are members of their own
        if info.flag_bits & 0x1:
            entries.append(_failing(member_label, "the ZIP member is encrypted (password-protected ZIPs "
                                                  "are not supported: unpack it first)"))
            continue
        if info.file_size > member_max_bytes:
            entries.append(_failing(member_label, f"the ZIP member would unpack to {info.file_size >> 20} MiB, "
                                                  f"above the {member_max_bytes >> 20} MiB limit for one "
                                                  "member (a damaged or malicious ZIP?)"))
            continue
        if depth == 0 and info.file_size <= IN_MEMORY_MAX and _member_is_zip(zf, info):
            entries.extend(_nested_zip(zf, info, member_label, member_max_bytes))
            continue
        entries.append(Entry(member_label, _member_opener(zf, info)))
    return entries


def _member_is_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    try:
        with zf.open(info) as fh:
            return fh.read(4) in ZIP_MAGIC
    except Exception:  # noqa: BLE001 - a broken member is reported when it is ingested
        return False


def _nested_zip(zf, info, label: str, member_max_bytes: int) -> list[Entry]:
    try:
        with zf.open(info) as fh:
            inner = zipfile.ZipFile(io.BytesIO(fh.read()))
        return _zip_entries(inner, label, member_max_bytes, depth=1)
    except (SourceError, zipfile.BadZipFile, OSError, ValueError) as exc:
        return [_failing(label, f"the ZIP inside the ZIP cannot be read ({_plain(exc)})")]


def _member_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], tuple[BinaryIO, int]]:
    def opener() -> tuple[BinaryIO, int]:
        fh = zf.open(info)
        if info.file_size <= IN_MEMORY_MAX:
            with fh:
                data = fh.read()  # raises BadZipFile on a CRC mismatch: a damaged member
            return io.BytesIO(data), len(data)
        return fh, info.file_size  # seekable; zipfile stops at the declared size
    return opener


def _failing(label: str, reason: str) -> Entry:
    def opener():
        raise SourceError(reason)
    return Entry(label, opener)


# -- DICOMDIR media ------------------------------------------------------------------------------

@dataclass
class MediaRecord:
    path: Path  # where the DICOMDIR says the file is (resolved case-insensitively)
    sop_uid: str


def read_dicomdir(dicomdir: Path) -> list[MediaRecord]:
    """The files a DICOMDIR lists, in its order; raise SourceError if it cannot be read."""
    try:
        ds = pydicom.dcmread(dicomdir)
        records = ds.DirectoryRecordSequence
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a damaged file
        raise SourceError(f"the DICOMDIR cannot be read ({_plain(exc)})") from None
    sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", MEDIA_DIRECTORY_SOP_CLASS))
    if sop_class != MEDIA_DIRECTORY_SOP_CLASS:
        raise SourceError("the file is named DICOMDIR but is not a DICOM media directory")
    root = dicomdir.parent
    found: list[MediaRecord] = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        parts = [str(p).strip() for p in parts if str(p).strip()]
        if not parts or any(p in ("..", ".") or "/" in p or "\\" in p for p in parts):
            continue  # a file ID must name a file below the DICOMDIR (PS3.10 8.2); never follow it out
        found.append(MediaRecord(_resolve(root, parts), str(record.get("ReferencedSOPInstanceUIDInFile", ""))))
    return found


def _resolve(root: Path, parts: list[str]) -> Path:
    """Follow file ID components, ignoring case and ISO 9660 ";1" versions as a copied CD may differ."""
    here = root
    for part in parts:
        exact = here / part
        if exact.exists():
            here = exact
            continue
        wanted = part.upper()
        match = None
        try:
            for child in here.iterdir():
                if child.name.upper().split(";")[0] == wanted:
                    match = child
                    break
        except OSError:
            pass
        here = match if match is not None else exact
    return here


def media_source(dicomdir: Path, label_root: Path | None) -> Source:
    """The objects a DICOMDIR lists; the other files of its folder tree go to ``unlisted``."""
    source = Source("media", dicomdir)
    try:
        records = read_dicomdir(dicomdir)
    except SourceError as exc:
        source.error = str(exc)
        return source
    listed = set()
    for rec in records:
        listed.add(rec.path)
        label = str(rec.path.relative_to(label_root)) if label_root else str(rec.path)
        source.entries.append(file_entry(rec.path, label, rec.sop_uid))
    for dirpath, _dirs, files in os.walk(dicomdir.parent):
        for name in files:
            p = Path(dirpath) / name
            if p != dicomdir and p not in listed and not is_ignored(name):
                source.unlisted.append(p)
    return source


# -- one-shot discovery ---------------------------------------------------------------------------

def discover(paths: list[Path], member_max_bytes: int) -> list[Source]:
    """Everything below ``paths``: a folder holding a DICOMDIR is read through it, the rest file by file."""
    sources: list[Source] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            sources.extend(_discover_dir(path, member_max_bytes))
        elif path.exists():
            sources.append(source_for_file(path, member_max_bytes))
        else:
            sources.append(Source("file", path, error="no such file or folder"))
    return sources


def _discover_dir(top: Path, member_max_bytes: int) -> list[Source]:
    sources: list[Source] = []
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        here = Path(dirpath)
        dicomdir = next((f for f in files if is_dicomdir_name(f)), None)
        if dicomdir is not None:
            sources.append(media_source(here / dicomdir, label_root=None))
            dirs[:] = []  # the DICOMDIR speaks for this whole tree
            continue
        for name in sorted(files):
            if not is_ignored(name):
                sources.append(source_for_file(here / name, member_max_bytes))
    return sources


def _plain(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
