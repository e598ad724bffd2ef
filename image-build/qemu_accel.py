"""Which qemu accelerator to boot the image with: KVM when it really runs a guest, else TCG.

`/dev/kvm` opening is not enough: on some hosts (nested VMs) KVM accepts the VM but
aborts on the first vCPU run ("failed to set MSR 0x10a", an Arch-Capabilities MSR
the host hides), or runs until the first x87 instruction and then stops with "KVM
internal error ... emulation failure" (OVMF's first FPU init; seen on the
Firecracker build VMs). So each candidate is tried on a 64 KiB firmware that does
an FPU init and then writes to qemu's isa-debug-exit port: qemu exits with status
3 within a second when the accelerator works, and otherwise aborts or hangs
(killed after a few seconds).

    python3 image-build/qemu_accel.py     # prints the arguments that would be used

PACS_QEMU_ACCEL=tcg|kvm forces a choice (kvm fails loudly if it does not work).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

QEMU = "qemu-system-x86_64"
# `host` first (fastest); without arch-capabilities for hosts whose KVM cannot set that MSR.
KVM_CPUS = ("host", "host,-arch-capabilities")
TCG = ["-accel", "tcg", "-cpu", "max"]
_EXIT_PORT = 0xF4
_PROBE_OK = 3  # isa-debug-exit: (value 1 << 1) | 1


def probe_firmware() -> bytes:
    """A BIOS image whose reset vector does `fwait; fninit; mov al, 1; out 0xf4, al; hlt`."""
    rom = bytearray(b"\xf4" * 65536)  # hlt everywhere else
    code = bytes([0x9B, 0xDB, 0xE3, 0xB0, 0x01, 0xE6, _EXIT_PORT, 0xF4])
    rom[0xFFF0:0xFFF0 + len(code)] = code
    return bytes(rom)


def runs_guest(accel_args: list[str], qemu: str = QEMU, timeout: float = 5) -> bool:
    with tempfile.TemporaryDirectory(prefix="qemu-probe-") as tmp:
        rom = Path(tmp) / "probe.rom"
        rom.write_bytes(probe_firmware())
        cmd = [qemu, "-machine", "q35", *accel_args, "-m", "64", "-nodefaults", "-display", "none",
               "-no-reboot", "-bios", str(rom), "-device", f"isa-debug-exit,iobase={_EXIT_PORT:#x},iosize=1"]
        try:
            return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == _PROBE_OK
        except (OSError, subprocess.TimeoutExpired):
            return False


def choose(kvm_device: Path = Path("/dev/kvm"), qemu: str = QEMU, env=os.environ) -> list[str]:
    """qemu arguments for the accelerator and CPU model to use."""
    forced = env.get("PACS_QEMU_ACCEL", "")
    if forced == "tcg":
        return list(TCG)
    if os.access(kvm_device, os.R_OK | os.W_OK):
        for cpu in KVM_CPUS:
            args = ["-accel", "kvm", "-cpu", cpu]
            if runs_guest(args, qemu):
                return args
    if forced == "kvm":
        raise RuntimeError(f"PACS_QEMU_ACCEL=kvm but KVM cannot run a guest here ({kvm_device} missing, "
                           "not accessible, or qemu aborts on it); unset it to use TCG")
    return list(TCG)


if __name__ == "__main__":
    print(" ".join(choose()))
    sys.exit(0)
