"""Update bundles are checked before anything is written: signature (vendor key), product,
and the payload against the signed checksum. Real rauc bundles signed with test keys."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from appliance.update.bundle import BundleRefused, verify  # noqa: E402
from update_helpers import make_bundle, make_key  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("rauc") is None or shutil.which("unsquashfs") is None,
                                reason="needs rauc and squashfs-tools (tests/run installs them)")


@pytest.fixture(scope="module")
def vendor(tmp_path_factory):
    d = tmp_path_factory.mktemp("vendor")
    key, cert = make_key(d)
    return key, cert, make_bundle(d, key, cert, "0.2.0")


def flip_byte(src: Path, dst: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def test_a_signed_bundle_is_accepted(vendor):
    key, cert, bundle = vendor
    info = verify(bundle, keyring=cert)
    assert (info.version, info.compatible, info.images) == ("0.2.0", "pacs-appliance-amd64", ("rootfs.ext4",))
    assert "vendor update signing" in info.signer


def test_a_bundle_signed_with_another_key_is_refused(vendor, tmp_path):
    _, cert, _ = vendor
    other_key, other_cert = make_key(tmp_path, "attacker")
    forged = make_bundle(tmp_path, other_key, other_cert, "9.9.9")
    with pytest.raises(BundleRefused, match=r"refused, signature verification failed"):
        verify(forged, keyring=cert)


def test_a_changed_payload_is_refused(vendor, tmp_path):
    _, cert, bundle = vendor
    tampered = flip_byte(bundle, tmp_path / "tampered.raucb", 300_000)  # inside the squashfs, in the image
    with pytest.raises(BundleRefused, match=r"image rootfs.ext4 is damaged or was changed after signing"):
        verify(tampered, keyring=cert)


def test_a_changed_signature_is_refused(vendor, tmp_path):
    _, cert, bundle = vendor
    tampered = flip_byte(bundle, tmp_path / "badsig.raucb", bundle.stat().st_size - 200)
    with pytest.raises(BundleRefused, match=r"refused, (signature verification failed|Invalid bundle format)"):
        verify(tampered, keyring=cert)


def test_a_truncated_or_foreign_bundle_is_refused(vendor, tmp_path):
    key, cert, bundle = vendor
    cut = tmp_path / "cut.raucb"
    cut.write_bytes(bundle.read_bytes()[:5000])
    with pytest.raises(BundleRefused, match="cut.raucb: refused"):
        verify(cut, keyring=cert)
    other_product = make_bundle(tmp_path, key, cert, "0.3.0", "--compatible", "someone-elses-box")
    with pytest.raises(BundleRefused, match="it is for 'someone-elses-box'"):
        verify(other_product, keyring=cert)


def test_without_a_keyring_nothing_is_accepted(vendor, tmp_path):
    _, _, bundle = vendor
    with pytest.raises(BundleRefused, match="no update keyring"):
        verify(bundle, keyring=tmp_path / "missing.pem")
