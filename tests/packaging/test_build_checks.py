"""Build and VM-test plumbing: the build stops when mmdebstrap leaves a mount inside the
rootfs, and the qemu tests use KVM only when it really runs a guest."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE_BUILD = Path(__file__).resolve().parents[2] / "image-build"
sys.path.insert(0, str(IMAGE_BUILD))

import qemu_accel  # noqa: E402

CHECK = IMAGE_BUILD / "check-unmounted"


def check(rootfs: Path, log: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK), str(rootfs), *([str(log)] if log else [])], capture_output=True, text=True)


@pytest.fixture
def rootfs(tmp_path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("proc", "sys", "dev", "etc"):
        (root / d).mkdir(parents=True)
    return root


def test_a_clean_rootfs_passes(rootfs, tmp_path):
    log = tmp_path / "mmdebstrap.log"
    log.write_text("I: running --customize-hook\nI: cleaning package lists and apt cache...\n")
    result = check(rootfs, log)
    assert result.returncode == 0, result.stderr


def test_mmdebstraps_unmount_warning_stops_the_build(rootfs, tmp_path):
    log = tmp_path / "mmdebstrap.log"
    log.write_text("I: cleaning package lists\nW: umount /proc failed: 8192\nI: success in 92.1 seconds\n")
    result = check(rootfs, log)
    assert result.returncode == 1
    assert "mmdebstrap could not unmount inside the rootfs: W: umount /proc failed" in result.stderr
    assert "fuser -vm" in result.stderr  # says how to find the culprit


def test_a_mount_left_inside_the_rootfs_stops_the_build(rootfs):
    if shutil.which("mount") is None or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("needs root to mount")
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    try:
        result = check(rootfs)
    finally:
        subprocess.run(["umount", str(rootfs / "proc")], check=True)
    assert result.returncode == 1
    assert f"still mounted inside the rootfs: {rootfs.resolve()}/proc" in result.stderr
    assert check(rootfs).returncode == 0  # unmounted: fine again


def test_files_in_the_proc_mount_point_stop_the_build(rootfs):
    (rootfs / "proc" / "cpuinfo").write_text("processor : 0\n")
    result = check(rootfs)
    assert result.returncode == 1 and "proc is not empty" in result.stderr


def test_mkimage_refuses_a_rootfs_with_a_live_proc(rootfs, tmp_path):
    (rootfs / "proc" / "1").mkdir()
    result = subprocess.run([str(IMAGE_BUILD / "mkimage"), str(rootfs), str(tmp_path / "out.img"), "8", "1", "8", "8"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "proc is not empty" in result.stderr
    assert not (tmp_path / "out.img").exists()


def test_tcg_without_a_usable_kvm_device(tmp_path):
    assert qemu_accel.choose(kvm_device=tmp_path / "no-kvm", env={}) == ["-accel", "tcg", "-cpu", "max"]
    assert qemu_accel.choose(env={"PACS_QEMU_ACCEL": "tcg"}) == ["-accel", "tcg", "-cpu", "max"]
    with pytest.raises(RuntimeError, match="PACS_QEMU_ACCEL=kvm but KVM cannot run a guest"):
        qemu_accel.choose(kvm_device=tmp_path / "no-kvm", env={"PACS_QEMU_ACCEL": "kvm"})


@pytest.mark.skipif(shutil.which(qemu_accel.QEMU) is None, reason="qemu-system-x86 not installed (tests/run installs it)")
def test_the_chosen_accelerator_runs_the_probe_guest_and_a_broken_one_does_not():
    chosen = qemu_accel.choose()
    assert qemu_accel.runs_guest(chosen)
    assert qemu_accel.runs_guest(["-accel", "tcg", "-cpu", "max"])
    assert not qemu_accel.runs_guest(["-accel", "tcg", "-cpu", "no-such-cpu-model"])
