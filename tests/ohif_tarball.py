"""The pinned OHIF release build (`npm pack @ohif/app@VERSION`), fetched once and cached outside the repo.

tests/run calls this before pytest (``python tests/ohif_tarball.py``); the real-OHIF test calls
``tarball()`` too, so running pytest directly works as well. The cache is
$XDG_CACHE_HOME/pacs-appliance/ohif (default ~/.cache/...); the file is checked against the
registry's sha512 for the pinned version, so a damaged or different download is never used.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # when run as a script by tests/run

from appliance.ohif import PINNED_INTEGRITY as INTEGRITY, PINNED_VERSION as VERSION  # noqa: E402
NAME = f"ohif-app-{VERSION}.tgz"


class Unavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pacs-appliance" / "ohif"


def _integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def tarball() -> Path:
    """The cached tarball, fetched with npm when missing; Unavailable says why it cannot be had."""
    path = cache_dir() / NAME
    if path.exists() and _integrity(path) == INTEGRITY:
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable(f"npm is not installed, so @ohif/app@{VERSION} cannot be fetched into {path}: "
                          "`apt-get install npm` (tests/run does)")
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", f"@ohif/app@{VERSION}", "--pack-destination", str(path.parent)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not path.exists():
        raise Unavailable(f"`npm pack @ohif/app@{VERSION}` failed (is the npm registry reachable?): "
                          f"{(done.stderr or done.stdout).strip()[-400:]}")
    got = _integrity(path)
    if got != INTEGRITY:
        path.unlink()
        raise Unavailable(f"{NAME} from the registry has integrity {got}, expected {INTEGRITY}")
    return path


if __name__ == "__main__":
    try:
        print(tarball())
    except Unavailable as exc:  # the suite still runs; the real-OHIF test then fails with this message
        print(f"tests/run: warning: {exc}", file=sys.stderr)
