"""Boot the appliance image as shipped under qemu (KVM if usable, else TCG; UEFI) and check it end to end.

Run through ``image-build/smoke-test [IMAGE]`` (see image-build/README.md). Steps:
1. copy the image to a scratch disk 2 GiB larger (the data partition must grow into
   it) and put a pacs-vendor.toml on its PACSCFG partition (with mtools, no mount);
2. first boot: wait for the service (a real C-ECHO through the forwarded DICOM
   port), read the one-time login from the serial console, C-STORE a synthetic
   study, log in to the web UI over HTTPS (certificate = the fingerprint shown on
   the console), check HTTP redirects to HTTPS; power the box off (ACPI);
3. update: write the same image's ESP and root partitions over the disk with
   image-build/update-disk (the documented update procedure);
4. second boot: the study is still there (C-FIND), the same admin password and TLS
   certificate work, and no new login was shown (secrets were not regenerated).
Only loopback port forwards; the guest has no other network (restrict=on).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import requests  # noqa: E402
import urllib3  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from tests.synth import make_instance  # noqa: E402

import qemu_accel  # noqa: E402  (image-build/, next to this file)

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # we pin the console's fingerprint instead
AE_TITLE = "SMOKEPACS"
VENDOR_TOML = f'hostname = "pacs-smoke"\ntimezone = "Europe/Berlin"\nae_title = "{AE_TITLE}"\nsite_name = "Smoke Test Clinic"\n'
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Box:
    """One qemu run of the disk, with loopback-only forwards to DICOM, HTTP and HTTPS."""

    def __init__(self, disk: Path, work: Path, name: str, accel: list[str] | None = None,
                 disk_cache: str | None = None):
        self.disk, self.work, self.name = disk, work, name
        self.disk_cache = disk_cache  # qemu's -drive cache= (None: qemu's default, writeback with flushes)
        self.accel = accel if accel is not None else qemu_accel.choose()
        self.ports = {"dicom": free_port(), "http": free_port(), "https": free_port()}
        self.serial = work / f"{name}-serial.log"
        self.qmp = work / f"{name}-qmp.sock"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        vars_fd = self.work / "OVMF_VARS.fd"
        if not vars_fd.exists():
            shutil.copy(OVMF_VARS, vars_fd)
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{self.ports[k]}-:{guest}"
                       for k, guest in (("dicom", 104), ("http", 80), ("https", 443)))
        cmd = ["qemu-system-x86_64", "-machine", "q35", *self.accel, "-smp", "2", "-m", "1536",
               "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
               "-drive", f"if=pflash,format=raw,file={vars_fd}",
               "-drive", f"file={self.disk},if=virtio,format=raw" + (f",cache={self.disk_cache}" if self.disk_cache else ""),
               "-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0",
               "-display", "none", "-monitor", "none", "-serial", f"file:{self.serial}",
               "-qmp", f"unix:{self.qmp},server=on,wait=off"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.work / f"{self.name}-qemu.err", "wb"))

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def console(self) -> str:
        return self.serial.read_text(errors="replace").replace("\r", "") if self.serial.exists() else ""

    def wait_ready(self, timeout: float) -> float:
        """Until a C-ECHO through the forwarded port succeeds; returns seconds since qemu started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited with {self.proc.returncode}:\n"
                                   f"{(self.work / f'{self.name}-qemu.err').read_text()}\n{self.console()[-3000:]}")
            if echo(self.ports["dicom"]):
                return self.elapsed()
            time.sleep(2)
        raise TimeoutError(f"{self.name}: no C-ECHO answer after {timeout:.0f} s; console tail:\n{self.console()[-3000:]}")

    def power_off(self, timeout: float = 180) -> str:
        """ACPI power button (a clean shutdown); a hard stop if the guest ignores it."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(self.qmp))
                s.settimeout(10)
                f = s.makefile("rw")
                f.readline()
                for command in ("qmp_capabilities", "system_powerdown"):
                    f.write(json.dumps({"execute": command}) + "\n")
                    f.flush()
                    f.readline()
            self.proc.wait(timeout)
            return "clean"
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
            return "hard (the guest did not power off)"

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def association(port: int, contexts):
    ae = AE(ae_title="SMOKESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title=AE_TITLE)


def echo(port: int) -> bool:
    try:
        assoc = association(port, [Verification])
    except Exception:  # noqa: BLE001 - not up yet
        return False
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def store(port: int, ds) -> int:
    assoc = association(port, [CTImageStorage])
    assert assoc.is_established, "C-STORE association rejected"
    status = assoc.send_c_store(ds)
    assoc.release()
    return status.Status


def find_study(port: int, study_uid: str) -> int:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.NumberOfStudyRelatedInstances = ""
    assoc = association(port, [StudyRootQueryRetrieveInformationModelFind])
    assert assoc.is_established, "C-FIND association rejected"
    matches = [ident for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
               if status and status.Status in (0xFF00, 0xFF01) and ident is not None]
    assoc.release()
    return len(matches)


def server_fingerprint(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest().upper()


def https_login(port: int, password: str) -> dict:
    """Log in through the login form; return what was seen (the cookie must be Secure)."""
    s = requests.Session()
    base = f"https://127.0.0.1:{port}"
    page = s.get(f"{base}/login", verify=False, timeout=60)
    page.raise_for_status()
    token = re.search(r'name="csrf_token"\s+value="([^"]+)"', page.text)
    form = {"username": "admin", "password": password}
    if token:
        form["csrf_token"] = token.group(1)
    resp = s.post(f"{base}/login", data=form, verify=False, timeout=60, allow_redirects=False)
    cookies = resp.raw.headers.getlist("Set-Cookie") if hasattr(resp.raw.headers, "getlist") else []
    return {"status": resp.status_code, "location": resp.headers.get("Location", ""),
            "secure_cookie": bool(cookies) and all("secure" in c.lower() for c in cookies)}


def put_vendor_config(disk: Path, text: str) -> None:
    """mcopy pacs-vendor.toml onto partition 2 (PACSCFG) of the disk image, without mounting it."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]["partitions"]
    offset = table[1]["start"] * 512
    src = disk.parent / "pacs-vendor.toml"
    src.write_text(text)
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{offset}", str(src), "::/pacs-vendor.toml"], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})


def guest_journal(disk: Path, work: Path) -> str:
    """The guest's journal for the appliance units, read from the root partition (no mount: debugfs)."""
    try:
        table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                          text=True).stdout)["partitiontable"]["partitions"]
        root = work / "root.part"
        subprocess.run(["dd", f"if={disk}", f"of={root}", "bs=512", f"skip={table[2]['start']}",
                        f"count={table[2]['size']}", "conv=sparse", "status=none"], check=True)
        subprocess.run(["debugfs", "-R", f"rdump /var/log/journal {work}", str(root)], check=True,
                       capture_output=True)
        root.unlink()
        out = subprocess.run(["journalctl", "--no-pager", "--file", f"{work}/journal/*/*", "-u", "pacs-appliance*"],
                             capture_output=True, text=True)
        return "\n".join((out.stdout + out.stderr).splitlines()[-40:])
    except (OSError, subprocess.CalledProcessError, KeyError, IndexError) as exc:
        return f"(could not read the guest journal: {exc})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path, help="the .img (or .img.zst) built by image-build/build")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each boot")
    parser.add_argument("--no-update", action="store_true", help="reboot without applying update-disk")
    args = parser.parse_args()
    image = args.image or max((HERE / "out").glob("*.img"), key=os.path.getmtime, default=None)
    if image is None or not image.exists():
        sys.exit("smoke-test: no image; build one with `sudo image-build/build`")
    work = args.work or Path(tempfile.mkdtemp(prefix="pacs-smoke-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    accel = qemu_accel.choose()
    results: dict = {"image": str(image), "accel": " ".join(accel)}
    t0 = time.monotonic()
    disk = work / "disk.img"
    if image.suffix == ".zst":
        subprocess.run(["zstd", "-q", "-f", "-d", str(image), "-o", str(disk)], check=True)
        image = disk.with_name("shipped.img")
        shutil.copy(disk, image)
    else:
        subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    with open(disk, "r+b") as f:  # a bigger "SSD": the data partition must grow into the space
        f.truncate(os.path.getsize(disk) + (2 << 30))
    subprocess.run(["sfdisk", "--relocate", "gpt-bak-std", str(disk)], check=True, capture_output=True)
    put_vendor_config(disk, VENDOR_TOML)

    boxes = []
    try:
        # ---- first boot
        box = Box(disk, work, "boot1", accel)
        boxes.append(box)
        box.start()
        results["boot1_ready_s"] = box.wait_ready(args.timeout)
        console = box.console()
        banner = re.search(r"password '([^']+)'", console)
        fingerprint = re.search(r"Certificate:\s+SHA-256 ([0-9A-F:]+)", console)
        assert banner and fingerprint, f"no first-login banner on the console:\n{console[-3000:]}"
        password, shown_fp = banner.group(1), fingerprint.group(1).replace(":", "")
        assert "Recovery key:" in console, "the recovery key was not shown"
        results["console_banner"] = True
        ds = make_instance("CT", patient_name="SMOKE^TEST", patient_id="SMOKE0001")
        results["c_store_status"] = f"0x{store(box.ports['dicom'], ds):04X}"
        assert results["c_store_status"] == "0x0000", results
        fp1 = server_fingerprint(box.ports["https"])
        assert fp1 == shown_fp, f"HTTPS certificate {fp1} is not the one shown on the console {shown_fp}"
        login = https_login(box.ports["https"], password)
        results["https_login_boot1"] = login
        assert login["status"] in (302, 303) and "/login" not in login["location"], f"login failed: {login}"
        assert login["secure_cookie"], f"session cookie not Secure: {login}"
        redirect = requests.get(f"http://127.0.0.1:{box.ports['http']}/login?x=1", allow_redirects=False, timeout=30)
        results["http_redirect"] = f"{redirect.status_code} {redirect.headers.get('Location')}"
        assert redirect.status_code == 301 and redirect.headers["Location"] == "https://127.0.0.1/login?x=1", results
        results["boot1_poweroff"] = box.power_off()

        # ---- update: new ESP + root, data partition kept
        if not args.no_update:
            t = time.monotonic()
            subprocess.run([sys.executable, str(HERE / "update-disk"), str(disk), str(image)], check=True,
                           capture_output=True)
            results["update_disk_s"] = round(time.monotonic() - t, 1)

        # ---- second boot
        box = Box(disk, work, "boot2", accel)
        boxes.append(box)
        box.start()
        results["boot2_ready_s"] = box.wait_ready(args.timeout)
        results["study_found_after_reboot"] = find_study(box.ports["dicom"], ds.StudyInstanceUID)
        assert results["study_found_after_reboot"] == 1, results
        assert server_fingerprint(box.ports["https"]) == fp1, "the TLS certificate was regenerated"
        login = https_login(box.ports["https"], password)
        results["https_login_boot2"] = login
        assert login["status"] in (302, 303) and "/login" not in login["location"], \
            f"the first admin password no longer works (secrets regenerated?): {login}"
        assert "first start of this box" not in box.console(), "a new first-login banner was shown"
        results["secrets_kept"] = True
        results["boot2_poweroff"] = box.power_off()
        results["result"] = "PASS"
    except Exception as exc:  # noqa: BLE001 - report, then fail
        results["result"] = f"FAIL: {exc}"
    finally:
        for box in boxes:
            box.kill()
    if results["result"] != "PASS":
        results["guest_journal"] = guest_journal(disk, work).splitlines()
    return report(results, t0, work, keep_work=args.work is not None)


def report(results: dict, t0: float, work: Path, keep_work: bool) -> int:
    """Print a qemu test's results as JSON; drop its work folder after a pass unless the caller named it."""
    results["total_s"] = round(time.monotonic() - t0, 1)
    results["work"] = str(work)
    print(json.dumps(results, indent=2))
    if results["result"] == "PASS" and not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if results["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
