"""The core parts over a temporary data directory, without a server: keys, archive, index, ingestor."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from appliance.archive import Archive, KeyStore
from appliance.events import Events
from appliance.index import Index
from appliance.ingest import Ingestor, Origin


@dataclass
class Core:
    root: Path
    keys: KeyStore
    archive: Archive
    index: Index
    ingestor: Ingestor
    origin: Origin = Origin("test", "pytest")

    def store(self, ds_or_bytes):
        """Store a pydicom Dataset (written as a Part 10 file) or raw bytes."""
        if isinstance(ds_or_bytes, bytes):
            return self.ingestor.store_bytes(ds_or_bytes, self.origin)
        buf = io.BytesIO()
        ds_or_bytes.save_as(buf, enforce_file_format=True)
        return self.ingestor.store_bytes(buf.getvalue(), self.origin)


def make_core(root: Path, on_conflict: str = "replace", reserve_bytes: int = 0, url: str = "") -> Core:
    """``url``: a PostgreSQL index (the index_url fixture) instead of the SQLCipher file under ``root``."""
    keys = KeyStore(root / "keys")
    keyring, _ = keys.create()
    archive = Archive(root / "archive", keyring, chunk_size=4096)
    archive.create_dirs()
    index = Index.open(root / "index.db", keyring.index_key, url=url)
    ingestor = Ingestor(archive, index, Events(), reserve_bytes=reserve_bytes, on_conflict=on_conflict)
    return Core(root, keys, archive, index, ingestor)
