"""Encrypted, durable object store for DICOM files (interface in area.py; files in store.py, envelope.py)."""
from .area import Staging, StorageArea
from .keys import Keyring, KeyStore
from .store import Archive, StoredObject

__all__ = ["Archive", "Keyring", "KeyStore", "Staging", "StorageArea", "StoredObject"]
