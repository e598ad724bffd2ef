"""A/B updates of the image under qemu, end to end (the slow suite runs it; see README §6).

    python3 image-build/update_test.py [IMAGE.img] [--work DIR]

Needs the image's `.root.img` and the development signing key of the build
(`$PACS_IMAGE_WORK/dev-update-key/`, or --key/--cert). On one disk, in order:
1. boot 1 (slot A, version V): ready, store a study;
2. upload a bundle of version V+b through the admin page -> installed into B,
   reboot, ready on B (update time measured), study still found;
3. upload a bundle signed with another key -> refused, still V+b;
4. upload a bundle of version V -> back to A;
5. upload a bundle whose service never becomes ready -> B boots, is not confirmed
   within the (shortened) confirm timeout, the box falls back to A by itself
   (fallback time measured);
6. upload V+b again and kill the VM while the slot is being written -> the box
   boots the old version.
Prints a JSON report; exit status 0 only if everything held.

To keep this finishable under TCG (no KVM), where every byte of a bundle costs
(upload, two checks, dm-verity, the slot write), the test bundles leave out the
kernel modules for hardware the qemu guest does not have (TEST_DROP: sound, GPUs,
Wi-Fi, Bluetooth, physical NICs, cameras, ...). They are still the build's root
file system otherwise, signed with its key, installed by RAUC and booted; the
shipped bundle (`out/*.raucb`) keeps everything. The test disk runs with qemu's
cache=unsafe (guest flushes not passed to the host disk): killing qemu still loses
only what the guest had not handed to qemu, as with the default cache mode.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import qemu_accel  # noqa: E402
import smoke_test as st  # noqa: E402

NEVER_READY = "[Service]\nExecStart=\nExecStart=/bin/sleep infinity\n"
SHORT_CONFIRM = "[Service]\nEnvironment=PACS_UPDATE_CONFIRM_TIMEOUT_S=90\n"
# Under /usr/lib/modules/<kernel>/kernel/: drivers for hardware a q35 qemu guest does not have.
TEST_DROP = ("sound", "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/net/wireless",
             "drivers/net/ethernet", "drivers/iio", "drivers/staging", "drivers/bluetooth", "drivers/isdn",
             "net/wireless", "net/mac80211", "net/bluetooth")
DISK_CACHE = "unsafe"


def module_drops(root_img: Path) -> list[str]:
    """The TEST_DROP trees present in the root image, as absolute paths (for make-bundle --drop)."""
    listing = subprocess.run(["debugfs", "-R", "ls -p /usr/lib/modules", str(root_img)], capture_output=True,
                             text=True, check=True).stdout
    kernels = [f.split("/")[5] for f in listing.split() if f.count("/") >= 6 and f.split("/")[5] not in (".", "..")]
    drops = []
    for kernel in kernels:
        for tree in TEST_DROP:
            path = f"/usr/lib/modules/{kernel}/kernel/{tree}"
            stat = subprocess.run(["debugfs", "-R", f"stat {path}", str(root_img)], capture_output=True, text=True)
            if "Inode:" in stat.stdout:
                drops.append(path)
    return drops


def make_bundle(root_img: Path, out: Path, key: Path, cert: Path, version: str, drops: list[str], *puts: str) -> Path:
    args = [str(HERE / "make-bundle"), "--key", str(key), "--cert", str(cert), "--version", version]
    for put in puts:
        args += ["--put", put]
    for tree in drops:
        args += ["--drop", tree]
    subprocess.run(args + [str(root_img), str(out)], check=True, capture_output=True)
    return out


class Admin:
    """The admin web UI over the forwarded HTTPS port (a new login per call: reboots end sessions)."""

    def __init__(self, box: st.Box, password: str, timeout: float = 120, upload_timeout: float = 3600):
        # Generous: under TCG the guest answers slowly while it checks or writes a bundle.
        self.box, self.password, self.timeout, self.upload_timeout = box, password, timeout, upload_timeout

    def _session(self) -> tuple[requests.Session, str]:
        s = requests.Session()
        base = f"https://127.0.0.1:{self.box.ports['https']}"
        page = s.get(f"{base}/login", verify=False, timeout=self.timeout)
        token = re.search(r'name="csrf_token"\s+value="([^"]+)"', page.text).group(1)
        s.post(f"{base}/login", data={"username": "admin", "password": self.password, "csrf_token": token},
               verify=False, timeout=self.timeout)
        return s, base

    def page(self) -> dict:
        s, base = self._session()
        text = s.get(f"{base}/admin/update", verify=False, timeout=self.timeout).text
        running = re.search(r"Running version <strong>([^<]+)</strong>", text)
        last = re.search(r'Last update: <span class="badge[^"]*">([^<]+)</span>\s*(.*?)\s*<small', text, re.S)
        return {"running": running.group(1) if running else None,
                "last_state": last.group(1) if last else None, "last_message": last.group(2) if last else None}

    def upload(self, bundle: Path) -> str:
        s, base = self._session()
        page = s.get(f"{base}/admin/update", verify=False, timeout=self.timeout)
        token = re.search(r'name="csrf_token"\s+value="([^"]+)"', page.text).group(1)
        with open(bundle, "rb") as f:
            resp = s.post(f"{base}/admin/update", data={"csrf_token": token}, verify=False, timeout=self.upload_timeout,
                          files={"bundle": (bundle.name, f, "application/octet-stream")})
        flash = re.search(r'class="alert[^"]*"[^>]*>(.*?)</', resp.text, re.S)
        return re.sub(r"\s+", " ", flash.group(1)).strip() if flash else resp.text[-500:]


def wait_for(predicate, timeout: float, what: str, box: st.Box, interval: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.proc.poll() is not None:
            raise RuntimeError(f"qemu exited while waiting for {what}; console tail:\n{box.console()[-3000:]}")
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: BLE001 - the box is rebooting
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s; console tail:\n{box.console()[-3000:]}")


def wait_running(box: st.Box, admin: Admin, version: str, timeout: float) -> float:
    """Until the box answers C-ECHO and its update page says it runs `version`; seconds from now."""
    t = time.monotonic()
    wait_for(lambda: st.echo(box.ports["dicom"]) and admin.page()["running"] == version, timeout,
             f"running {version}", box, interval=5)
    return round(time.monotonic() - t, 1)


def wait_down(box: st.Box, timeout: float) -> float:
    t = time.monotonic()
    wait_for(lambda: not st.echo(box.ports["dicom"]), timeout, "the box to go down for its reboot", box, 2)
    return round(time.monotonic() - t, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--key", type=Path, default=Path(os.environ.get("PACS_IMAGE_WORK", "/var/tmp/pacs-image-build"))
                        / "dev-update-key" / "key.pem")
    parser.add_argument("--cert", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each boot")
    parser.add_argument("--install-timeout", type=float, default=3600,
                        help="seconds for an upload's check, and from the upload to the reboot into the new slot")
    args = parser.parse_args()
    image = args.image or max((HERE / "out").glob("*.img"), key=os.path.getmtime, default=None)
    if image is None:
        sys.exit("update-test: no image; build one with `sudo image-build/build`")
    root_img = image.with_name(image.name.replace(".img", ".root.img"))
    cert = args.cert or args.key.with_name("cert.pem")
    for needed in (root_img, args.key, cert):
        if not needed.exists():
            sys.exit(f"update-test: {needed} missing (build the image first; it keeps the root image and dev key)")
    version = subprocess.run(["debugfs", "-R", "cat /usr/lib/pacs-appliance/image-version", str(root_img)],
                             capture_output=True, text=True, check=True).stdout.strip()
    work = args.work or Path(tempfile.mkdtemp(prefix="pacs-update-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"image": str(image), "version_a": version, "accel": " ".join(qemu_accel.choose())}
    t0 = time.monotonic()

    # Bundles: the next version, the same version (to go back), one that never gets ready, a forged one.
    v2 = f"{version}+b"
    drop = work / "drop"
    drop.mkdir(exist_ok=True)
    (drop / "never-ready.conf").write_text(NEVER_READY)
    (drop / "short-confirm.conf").write_text(SHORT_CONFIRM)
    forger = work / "forger"
    forger.mkdir(exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(forger / "key.pem"), "-out", str(forger / "cert.pem"), "-days", "30",
                    "-subj", "/CN=not the vendor"], check=True, capture_output=True)
    # Made one after the other in the background while the first boot runs.
    drops = module_drops(root_img)
    results["bundle_drops"] = [d.split("/kernel/", 1)[-1] for d in drops]
    pool = ThreadPoolExecutor(max_workers=1)
    t_bundles = time.monotonic()
    f_next = pool.submit(make_bundle, root_img, work / "next.raucb", args.key, cert, v2, drops)
    f_forged = pool.submit(make_bundle, root_img, work / "forged.raucb", forger / "key.pem", forger / "cert.pem",
                           "99.0", drops)
    f_back = pool.submit(make_bundle, root_img, work / "back.raucb", args.key, cert, version, drops)
    f_broken = pool.submit(
        make_bundle, root_img, work / "broken.raucb", args.key, cert, f"{version}+broken", drops,
        f"/etc/systemd/system/pacs-appliance.service.d/90-test-never-ready.conf={drop / 'never-ready.conf'}",
        f"/etc/systemd/system/pacs-appliance-update-confirm.service.d/90-test.conf={drop / 'short-confirm.conf'}")

    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    with open(disk, "r+b") as f:
        f.truncate(os.path.getsize(disk) + (2 << 30))
    subprocess.run(["sfdisk", "--relocate", "gpt-bak-std", str(disk)], check=True, capture_output=True)
    st.put_vendor_config(disk, st.VENDOR_TOML)

    box = st.Box(disk, work, "update", disk_cache=DISK_CACHE)
    try:
        box.start()
        results["boot1_ready_s"] = box.wait_ready(args.timeout)
        banner = re.search(r"password '([^']+)'", box.console())
        assert banner, "no first-login banner"
        admin = Admin(box, banner.group(1), upload_timeout=args.install_timeout)
        ds = st.make_instance("CT", patient_name="UPDATE^TEST", patient_id="UPD0001")
        assert st.store(box.ports["dicom"], ds) == 0
        assert admin.page()["running"] == version

        # A -> B
        b_next = f_next.result()
        results["bundle_make_s"] = round(time.monotonic() - t_bundles, 1)
        results["bundle_mib"] = b_next.stat().st_size >> 20
        t = time.monotonic()
        results["upload_next"] = admin.upload(b_next)
        assert "checked and accepted" in results["upload_next"], results
        results["next_down_s"] = wait_down(box, args.install_timeout)
        results["next_ready_after_upload_s"] = round(time.monotonic() - t, 1) + wait_running(box, admin, v2, args.timeout)
        page = admin.page()
        results["next_page"] = page
        assert page["last_state"] == "updated", page
        assert st.find_study(box.ports["dicom"], ds.StudyInstanceUID) == 1
        install_s = re.search(r"in ([0-9.]+) s", page["last_message"] or "")
        results["next_install_s"] = float(install_s.group(1)) if install_s else None

        # forged bundle: refused at the upload, nothing changes
        results["upload_forged"] = admin.upload(f_forged.result())
        assert "Not installed" in results["upload_forged"] and "signature" in results["upload_forged"], results
        assert admin.page()["running"] == v2

        # B -> A (back)
        t = time.monotonic()
        results["upload_back"] = admin.upload(f_back.result())
        wait_down(box, args.install_timeout)
        results["back_ready_after_upload_s"] = round(time.monotonic() - t, 1) + wait_running(box, admin, version,
                                                                                               args.timeout)
        assert admin.page()["last_state"] == "updated"
        assert st.find_study(box.ports["dicom"], ds.StudyInstanceUID) == 1

        # never ready -> falls back by itself
        t = time.monotonic()
        results["upload_broken"] = admin.upload(f_broken.result())
        assert "checked and accepted" in results["upload_broken"], results
        wait_down(box, args.install_timeout)
        results["broken_down_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        results["fallback_ready_s"] = wait_running(box, admin, version, args.timeout + 600)
        page = admin.page()
        results["fallback_page"] = page
        assert page["last_state"] == "fell back", page
        assert st.find_study(box.ports["dicom"], ds.StudyInstanceUID) == 1

        # power cut while the slot is written
        results["upload_powercut"] = admin.upload(b_next)
        wait_for(lambda: admin.page()["last_state"] == "installing", args.install_timeout, "the install to start",
                 box, 1)
        delay = max(2.0, 0.4 * float(install_s.group(1))) if install_s else 5.0
        time.sleep(delay)
        box.kill()
        results["powercut_after_install_started_s"] = round(delay, 1)
        box = st.Box(disk, work, "after-powercut", box.accel, disk_cache=DISK_CACHE)
        box.start()
        results["powercut_boot_ready_s"] = box.wait_ready(args.timeout)
        admin = Admin(box, admin.password, upload_timeout=args.install_timeout)
        page = wait_for(lambda: admin.page(), 120, "the update page", box)
        results["powercut_page"] = page
        assert page["running"] == version, page
        assert page["last_state"] == "interrupted", page
        assert st.find_study(box.ports["dicom"], ds.StudyInstanceUID) == 1
        results["poweroff"] = box.power_off()
        results["result"] = "PASS"
    except Exception as exc:  # noqa: BLE001 - report, then fail
        results["result"] = f"FAIL: {type(exc).__name__}: {exc}"
    finally:
        box.kill()
        pool.shutdown(cancel_futures=True)
    return st.report(results, t0, work, keep_work=args.work is not None)


if __name__ == "__main__":
    sys.exit(main())
