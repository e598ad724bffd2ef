"""The OS image as shipped, booted under qemu (slow: run with `sudo tests/run -m slow`).

Builds the image first when image-build/out/ has none (as root, a few minutes),
then runs image-build/smoke-test (first boot, C-ECHO/C-STORE, HTTPS login,
power-off, update-disk, second boot with the study and secrets kept),
image-build/update_test.py (signed A/B updates, refusal, rollback, fallback,
power cut while writing) and image-build/powercut_test.py (power cuts during ingest).
KVM when it can run a guest, else TCG (image-build/qemu_accel.py).
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


def built_image() -> Path:
    """The newest image in image-build/out/ (with its root image and dev key), built first if there is none."""
    if os.geteuid() != 0:
        pytest.fail("building and booting the image needs root (mmdebstrap, chroot): run `sudo tests/run -m slow`")
    for tool in ("qemu-system-x86_64", "mcopy", "sfdisk", "rauc", "grub-mkstandalone"):
        if shutil.which(tool) is None:
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86",
                            "qemu-utils", "ovmf", "mtools", "fdisk", "zstd", "rauc", "squashfs-tools",
                            "grub-efi-amd64-bin", "grub-common"], check=True)
            break
    images = sorted((IMAGE_BUILD / "out").glob("*-amd64.img"), key=os.path.getmtime)
    if not images:
        subprocess.run([str(IMAGE_BUILD / "build")], check=True)
        images = sorted((IMAGE_BUILD / "out").glob("*-amd64.img"), key=os.path.getmtime)
    return images[-1]


def run_report(script: str, *args: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, str(IMAGE_BUILD / script), *args], capture_output=True, text=True)
    report = json.loads(result.stdout[result.stdout.index("{"):])
    print(json.dumps(report, indent=2))
    return result.returncode, report


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_boots_serves_and_keeps_data_across_reboot_and_update():
    rc, report = run_report("smoke_test.py", str(built_image()))
    assert rc == 0 and report["result"] == "PASS", report


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_ab_update_rollback_refusal_fallback_and_power_cut_while_writing():
    """A->B by upload, forged bundle refused, B->A, a never-ready version falls back by itself,
    a power cut while writing the slot leaves the old version booting (image-build/update_test.py)."""
    rc, report = run_report("update_test.py", str(built_image()))
    assert rc == 0 and report["result"] == "PASS", report


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_power_cuts_during_ingest_lose_nothing_acknowledged():
    """10 cycles: 4 associations sending, the VM killed, every acknowledged instance intact,
    `pacs-appliance verify` clean (image-build/powercut_test.py)."""
    rc, report = run_report("powercut_test.py", str(built_image()), "--cycles", "10")
    assert rc == 0 and report["result"] == "PASS" and report["cycles_survived"] == 10, report
