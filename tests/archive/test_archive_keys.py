"""The key store: files private to the appliance's user, never overwritten, recoverable with the recovery key."""
from __future__ import annotations

import stat

import pytest

from appliance.archive import KeyStore
from appliance.archive.keys import (format_recovery_key, parse_recovery_key, seal_keyring, unseal_keyring)
from appliance.errors import DataDirError, KeyStoreError


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_private(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.create()
    assert mode(store.dir) == 0o700
    files = sorted(p.name for p in store.dir.iterdir())
    assert files == ["keyring.json", "keyring.sealed", "recovery.key"]
    for path in store.dir.iterdir():
        assert mode(path) == 0o600, path.name


def test_create_refuses_to_overwrite(tmp_path):
    store = KeyStore(tmp_path / "keys")
    ring, _ = store.create()
    before = {p.name: p.read_bytes() for p in store.dir.iterdir()}
    with pytest.raises(DataDirError):
        store.create()
    assert {p.name: p.read_bytes() for p in store.dir.iterdir()} == before
    assert store.load().index_key == ring.index_key


def test_recovery_key_opens_the_sealed_keyring(tmp_path):
    store = KeyStore(tmp_path / "keys")
    ring, recovery = store.create()
    text = format_recovery_key(recovery)
    assert parse_recovery_key(text.lower()) == recovery
    opened = unseal_keyring(store.sealed_keyring(), parse_recovery_key(text))
    assert opened.archive_keys == ring.archive_keys and opened.index_key == ring.index_key


def test_wrong_recovery_key_is_refused(tmp_path):
    store = KeyStore(tmp_path / "keys")
    ring, recovery = store.create()
    with pytest.raises(KeyStoreError):
        unseal_keyring(store.sealed_keyring(), bytes(32))
    with pytest.raises(KeyStoreError):
        parse_recovery_key("not-a-key")
    with pytest.raises(KeyStoreError):
        unseal_keyring(b"garbage", recovery)


def test_rotation_is_saved_and_sealed(tmp_path):
    store = KeyStore(tmp_path / "keys")
    ring, recovery = store.create()
    new_id = ring.rotate()
    store.save(ring)
    assert store.load().current_archive_key == new_id
    assert unseal_keyring(store.sealed_keyring(), recovery).current_archive_key == new_id
    assert seal_keyring(ring, recovery) != seal_keyring(ring, recovery)  # fresh nonce each time


def test_missing_or_damaged_keyring(tmp_path):
    store = KeyStore(tmp_path / "keys")
    with pytest.raises(KeyStoreError, match="init"):
        store.load()
    store.create()
    (store.dir / "keyring.json").write_text("{not json")
    with pytest.raises(KeyStoreError):
        store.load()
