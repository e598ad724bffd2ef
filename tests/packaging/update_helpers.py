"""Test keys and small signed bundles for the update tests (real rauc, real openssl)."""
from __future__ import annotations

import subprocess
from pathlib import Path

MAKE_BUNDLE = Path(__file__).resolve().parents[2] / "image-build" / "make-bundle"


def make_key(directory: Path, name: str = "vendor") -> tuple[Path, Path]:
    """A self-signed EC signing key and certificate, as a vendor would make once."""
    key, cert = directory / f"{name}.key.pem", directory / f"{name}.cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
                    "-subj", f"/O=Test Vendor/CN={name} update signing"], check=True, capture_output=True)
    return key, cert


def make_root_image(directory: Path) -> Path:
    """A small ext4 image standing in for the root file system (random content: not compressible)."""
    tree = directory / "tree"
    (tree / "usr/lib/pacs-appliance").mkdir(parents=True, exist_ok=True)
    (tree / "usr/blob").write_bytes(Path("/dev/urandom").open("rb").read(512 << 10))
    image = directory / "root.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "8M"], check=True, capture_output=True)
    return image


def make_bundle(directory: Path, key: Path, cert: Path, version: str = "0.2.0", *extra: str) -> Path:
    out = directory / f"update-{version}-{key.stem}.raucb"
    subprocess.run([str(MAKE_BUNDLE), "--key", str(key), "--cert", str(cert), "--version", version, *extra,
                    str(make_root_image(directory)), str(out)], check=True, capture_output=True)
    return out
