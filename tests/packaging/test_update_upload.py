"""The admin page "Software update": an upload is checked with the same bundle check as the
other ways in; a tampered or foreign bundle is refused with the reason and never reaches
the install queue, a signed one is queued for the root-run installer. Only admins."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ADMIN_PASSWORD, CLI, Server, init_data_dir  # noqa: E402
from update_helpers import MAKE_BUNDLE, make_bundle, make_key  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("rauc") is None or shutil.which("unsquashfs") is None,
                                reason="needs rauc and squashfs-tools (tests/run installs them)")


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def box(tmp_path):
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    key, cert = make_key(vendor)
    (tmp_path / "root").mkdir()
    data = init_data_dir(tmp_path / "root" / "data")  # the image's layout: <data partition>/data
    srv = Server(data, env={"PACS_UPDATE_KEYRING": str(cert)}).start()
    session = requests.Session()
    token = csrf(session.get(f"{srv.url}/login").text)
    session.post(f"{srv.url}/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    yield srv, session, vendor, key, cert
    srv.kill()


def upload(srv, session, bundle: Path) -> requests.Response:
    token = csrf(session.get(f"{srv.url}/admin/update").text)
    with open(bundle, "rb") as f:
        return session.post(f"{srv.url}/admin/update", data={"csrf_token": token},
                            files={"bundle": (bundle.name, f, "application/octet-stream")})


def test_upload_checks_the_bundle_and_queues_only_a_signed_one(box, tmp_path):
    srv, session, vendor, key, cert = box
    incoming = srv.data_dir.parent / "data" / "update-incoming"
    good = make_bundle(vendor, key, cert, "0.2.0")
    data = bytearray(good.read_bytes())
    data[300_000] ^= 0xFF
    tampered = tmp_path / "tampered.raucb"
    tampered.write_bytes(bytes(data))
    other_key, other_cert = make_key(tmp_path, "someone-else")
    forged = make_bundle(tmp_path, other_key, other_cert, "6.6.6")

    page = upload(srv, session, tampered)
    assert page.status_code == 200 and "Not installed: " in page.text and "changed after signing" in page.text
    page = upload(srv, session, forged)
    assert "Not installed: " in page.text and "signature verification failed" in page.text
    assert not incoming.exists() or list(incoming.iterdir()) == []

    page = upload(srv, session, good)
    assert "Update 0.2.0 checked and accepted" in page.text
    queued = list(incoming.glob("*.raucb"))
    assert len(queued) == 1 and queued[0].read_bytes() == good.read_bytes()
    assert list((incoming.parent / "update-incoming.partial").iterdir()) == []
    assert "Software update" in session.get(f"{srv.url}/").text  # in the admin's menu


def test_only_admins_reach_the_update_page(box):
    srv, _, _, _, _ = box
    anonymous = requests.get(f"{srv.url}/admin/update", allow_redirects=False)
    assert anonymous.status_code in (302, 303, 401) and "/login" in anonymous.headers.get("Location", "/login")


def test_a_bundle_bigger_than_a_form_is_accepted(box, tmp_path):
    """A real bundle is a few hundred MiB; 3 MiB of incompressible root is enough to cross the form limit."""
    srv, session, vendor, key, cert = box
    tree = tmp_path / "tree"
    (tree / "usr/lib/pacs-appliance").mkdir(parents=True)
    (tree / "usr/blob").write_bytes(Path("/dev/urandom").open("rb").read(3 << 20))
    root = tmp_path / "root.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(root), "16M"], check=True, capture_output=True)
    bundle = tmp_path / "big.raucb"
    subprocess.run([str(MAKE_BUNDLE), "--key", str(key), "--cert", str(cert), "--version", "0.3.0", str(root),
                    str(bundle)], check=True, capture_output=True)
    assert bundle.stat().st_size > 2 << 20
    try:
        page = upload(srv, session, bundle)
    except requests.ConnectionError as exc:  # the server answers 413 and closes while the body is still sent
        pytest.fail(f"upload cut off: {exc}")
    assert "Update 0.3.0 checked and accepted" in page.text, page.text[-500:]


def test_only_an_admin_may_send_a_bundle_sized_body(box, tmp_path):
    """The bundle's large-body allowance is the admin's: another role's form there stays bounded (413, unread)."""
    srv, _, _, _, _ = box
    pw = tmp_path / "pw"
    pw.write_text("technologist-password-1\n")
    subprocess.run(CLI + ["user", "add", "tech", "--role", "technologist", "--password-file", str(pw),
                          "--data", str(srv.data_dir)], check=True, capture_output=True)
    session = requests.Session()
    token = csrf(session.get(f"{srv.url}/login").text)
    session.post(f"{srv.url}/login", data={"username": "tech", "password": "technologist-password-1",
                                           "csrf_token": token})
    token = csrf(session.get(f"{srv.url}/").text)
    try:
        r = session.post(f"{srv.url}/admin/update", data={"csrf_token": token},
                         files={"bundle": ("big.raucb", b"\0" * (3 << 20), "application/octet-stream")})
    except requests.ConnectionError:
        return  # refused while the body was still being sent: it was never read
    assert r.status_code == 413, r.status_code
