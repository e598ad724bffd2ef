"""Reading a data directory back from a test: what the index holds and the archive's bytes.

Opens the same keys, index and archive a server uses (read-only use; a server
may be running: SQLite WAL lets us read beside it).
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

from pydicom.filereader import _read_file_meta_info, read_preamble

from appliance import config as config_mod
from appliance.archive import Archive, KeyStore
from appliance.index import Index
from indexkit import instances


@contextmanager
def opened(data_dir: Path):
    """Yield (archive, index) for ``data_dir``; close the index afterwards."""
    cfg = config_mod.load(data_dir, env={})
    keyring = KeyStore(cfg.keys_dir).load()
    index = Index.open(cfg.index_path, keyring.index_key, url=cfg.index.url)  # a PostgreSQL index: its URL
    try:
        yield Archive(cfg.archive_dir, keyring), index
    finally:
        index.close()


def stored(data_dir: Path) -> dict[str, bytes]:
    """SOP Instance UID -> the object's bytes, for every indexed instance."""
    with opened(data_dir) as (archive, index):
        return {sop_uid: archive.read(object_id) for sop_uid, object_id in instances(index).items()}


def index_object_ids(data_dir: Path) -> dict[str, str]:
    with opened(data_dir) as (_archive, index):
        return instances(index)


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(file meta group bytes, dataset bytes) of a Part 10 file."""
    fp = io.BytesIO(data)
    read_preamble(fp, force=False)
    start = fp.tell()
    _read_file_meta_info(fp)
    end = fp.tell()
    return data[start:end], data[end:]


def dataset_bytes(data: bytes) -> bytes:
    return split_part10(data)[1]
