"""A folder target: a mounted disk or network share, ``file:///mnt/nas/pacs`` or a plain path.

Atomic put: temp file, fsync, rename, fsync the directory.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from ...archive.fsutil import fsync_dir
from ...errors import ConfigError
from .base import TEMP_PREFIX, TargetError, check_name, copy_exact


class FolderTarget:
    SCHEMES = ("file",)  # and a plain path (no scheme)
    OPTIONS: tuple[str, ...] = ()
    EXAMPLE = "file:///path"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"
        self._dirs: set[Path] = set()
        if not self.root.is_dir():
            raise TargetError(f"backup folder {self.root} does not exist or is not mounted: create or mount it first")

    # -- settings --------------------------------------------------------------
    @classmethod
    def parse_url(cls, url: str) -> Path:
        parts = urlsplit(url)
        if not parts.scheme:
            path = url
        else:
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(f"folder target {url!r} names host {parts.netloc!r}: a folder target is a local "
                                  "path, file:///path (three slashes); mount a network share there first")
            path = unquote(parts.path)
        if not path:
            raise ConfigError(f"folder target {url!r} has no path: use file:///path/to/folder")
        return Path(path)

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> "FolderTarget":
        return cls(cls.parse_url(url))

    # -- the Target interface ---------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def put(self, name: str, src: BinaryIO, size: int) -> None:
        path = self._path(name)
        if path.parent not in self._dirs:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise TargetError(f"cannot store {name}: part of its path is a file in {self.root}") from None
            self._dirs.add(path.parent)
        tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
        try:
            with open(tmp, "wb") as fh:
                copy_exact(src, fh, size, name)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except (IsADirectoryError, NotADirectoryError):  # a "directory" is no blob, as on S3
            raise FileNotFoundError(name) from None

    def size(self, name: str) -> int | None:
        try:
            st = self._path(name).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self.root / check_name(prefix, prefix=True)
        if not base.is_dir():
            return
        for dirpath, dirs, files in os.walk(base):
            dirs.sort()  # name order (base.Target.list): walked top-down, a directory's files before its folders
            for f in sorted(files):
                if f.startswith(TEMP_PREFIX):
                    continue
                full = os.path.join(dirpath, f)
                yield os.path.relpath(full, self.root).replace(os.sep, "/"), os.stat(full).st_size

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except NotADirectoryError:
            pass

    def close(self) -> None:
        pass
