"""Encrypted, durable object store for DICOM files (see store.py and envelope.py)."""
from .keys import Keyring, KeyStore
from .store import Archive, StoredObject

__all__ = ["Archive", "Keyring", "KeyStore", "StoredObject"]
