"""Checking an update bundle before anything is written: the one verification every way in uses.

A bundle is a RAUC bundle (``.raucb``, "verity" format): a squashfs holding the new
root file system image and a manifest (compatible string, version, the image's
SHA-256), signed (CMS) with the vendor's key. The box trusts the vendor certificate
in ``/etc/rauc/keyring.pem`` (part of the image).

``verify()`` refuses a bundle unless
1. ``rauc info --keyring`` accepts the signature over the manifest (wrong key,
   expired/unknown certificate, changed manifest or signature: refused);
2. the manifest is for this product (``compatible``);
3. every image in the squashfs hashes to the SHA-256 the signed manifest names
   (``unsquashfs -cat``: a changed payload is refused here, before install,
   rather than only by dm-verity half way through writing the slot).

The admin page (upload), the USB path and the scheduled pull all call it, and
``rauc install`` then checks the signature again itself.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ApplianceError

COMPATIBLE = "pacs-appliance-amd64"
KEYRING = Path("/etc/rauc/keyring.pem")
BUNDLE_SUFFIX = ".raucb"
_CHUNK = 1 << 20


class BundleRefused(ApplianceError):
    """The bundle is not a valid, signed update for this box: nothing was written."""

    exit_code = 4
    http_status = 400


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    version: str
    compatible: str
    signer: str
    images: tuple[str, ...]


@dataclass(frozen=True)
class Tools:
    """The programs used; tests may point them elsewhere."""

    rauc: str = "rauc"
    unsquashfs: str = "unsquashfs"


def verify(bundle: Path, keyring: Path = KEYRING, compatible: str = COMPATIBLE, tools: Tools = Tools()) -> BundleInfo:
    """Check signature, product and payload of ``bundle``; raise BundleRefused with the reason."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise BundleRefused(f"{bundle.name}: no such file")
    if not Path(keyring).is_file():
        raise BundleRefused(f"no update keyring at {keyring}: this box cannot check signatures")
    result = _run([tools.rauc, "info", "--keyring", str(keyring), "--output-format=json", str(bundle)])
    if result.returncode != 0:
        raise BundleRefused(f"{bundle.name}: refused, {_rauc_reason(result.stderr)}")
    try:
        manifest = json.loads(result.stdout[result.stdout.index("{"):])
    except ValueError:
        raise BundleRefused(f"{bundle.name}: refused, rauc printed no bundle information") from None
    signer = _signer(result.stderr)
    if manifest.get("compatible") != compatible:
        raise BundleRefused(f"{bundle.name}: refused, it is for {manifest.get('compatible')!r}, "
                            f"this box takes {compatible!r} bundles")
    version = str(manifest.get("version") or "")
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}", version):
        raise BundleRefused(f"{bundle.name}: refused, no usable version in its manifest ({version!r})")
    images = []
    for entry in manifest.get("images") or []:
        for slot_class, image in entry.items():
            _check_image(bundle, slot_class, image, tools)
            images.append(image["filename"])
    if not images:
        raise BundleRefused(f"{bundle.name}: refused, it holds no image")
    return BundleInfo(bundle, version, manifest["compatible"], signer, tuple(images))


def _check_image(bundle: Path, slot_class: str, image: dict, tools: Tools) -> None:
    name, expected, size = image.get("filename"), image.get("checksum"), image.get("size")
    if not name or not expected or "/" in name:
        raise BundleRefused(f"{bundle.name}: refused, image for {slot_class} has no file name or checksum")
    digest, length = hashlib.sha256(), 0
    proc = subprocess.Popen([tools.unsquashfs, "-cat", str(bundle), name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(_CHUNK), b""):
        digest.update(chunk)
        length += len(chunk)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0 or digest.hexdigest() != expected or (size is not None and length != int(size)):
        detail = err.strip().splitlines()[-1] if err.strip() else "its content does not match the signed checksum"
        raise BundleRefused(f"{bundle.name}: refused, image {name} is damaged or was changed after signing "
                            f"({detail})")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise BundleRefused(f"{cmd[0]} is not installed: cannot check update bundles") from None


def _rauc_reason(stderr: str) -> str:
    """The line of rauc's output that says why (without its log prefixes)."""
    lines = [re.sub(r"^rauc-(Message|Warning|Critical):\s*[\d:.]*:\s*", "", line).strip()
             for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"fail|error|invalid|not|unsupported|mismatch", line, re.I):
            return line
    return lines[-1] if lines else "rauc could not read it"


def _signer(stderr: str) -> str:
    match = re.search(r"Verified (?:inline|detached) signature by '([^']*)'", stderr)
    return match.group(1) if match else ""
