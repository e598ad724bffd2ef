"""The OS image as shipped, booted under qemu (slow: run with `tests/run -m slow`).

Builds the image first when image-build/out/ has none (as root, a few minutes),
then runs image-build/smoke-test: first boot, C-ECHO/C-STORE, HTTPS login,
power-off, update-disk, second boot with the study and secrets kept.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE_BUILD = Path(__file__).resolve().parents[2] / "image-build"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_boots_serves_and_keeps_data_across_reboot_and_update():
    if os.geteuid() != 0:
        pytest.fail("building and booting the image needs root (mmdebstrap, chroot): run `sudo tests/run -m slow`")
    for tool in ("qemu-system-x86_64", "mcopy", "sfdisk"):
        if shutil.which(tool) is None:
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86",
                            "qemu-utils", "ovmf", "mtools", "fdisk", "zstd"], check=True)
            break
    images = sorted((IMAGE_BUILD / "out").glob("*.img"), key=os.path.getmtime)
    if not images:
        subprocess.run([str(IMAGE_BUILD / "build")], check=True)
        images = sorted((IMAGE_BUILD / "out").glob("*.img"), key=os.path.getmtime)
    result = subprocess.run([sys.executable, str(IMAGE_BUILD / "smoke_test.py"), str(images[-1])],
                            capture_output=True, text=True)
    report = json.loads(result.stdout[result.stdout.index("{"):])
    print(json.dumps(report, indent=2))
    assert result.returncode == 0 and report["result"] == "PASS", report
