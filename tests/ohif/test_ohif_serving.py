"""/ohif without a browser: the install step, the not-installed page, sign-in, fallbacks, the generated
app-config.js, the CSP, and [http] public_url in DICOMweb's absolute URLs.

A tiny hand-made @ohif/app tarball stands in for the 48 MB release build here (same layout:
package/package.json and package/dist/); test_ohif_browser.py runs the real one.
"""
from __future__ import annotations

import io
import json
import re
import tarfile

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

import synth
from helpers import ADMIN_PASSWORD, CLI, Server, init_data_dir, run_cli

INDEX = ('<!doctype html><html><head><link rel="manifest" href="/manifest.json">'
         '<script>window.PUBLIC_URL="/"</script><script src="/app-config.js"></script>'
         '<script defer src="/app.bundle.0123456789abcdef.js"></script></head><body><div id="root"></div></body></html>')
BUNDLE = '(() => {\n__webpack_require__.p = "/";\n})();\n'


def make_tarball(path, name="@ohif/app", extra=()):
    with tarfile.open(path, "w:gz") as tar:
        for member, text in (("package/package.json", json.dumps({"name": name, "version": "9.9.9"})),
                             ("package/dist/index.html", INDEX),
                             ("package/dist/app.bundle.0123456789abcdef.js", BUNDLE),
                             ("package/dist/app.bundle.css", "@font-face{src:url(/a.woff2)}"),
                             ("package/dist/app-config.js", "window.config = {secret: 1}"), *extra):
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    root = tmp_path_factory.mktemp("ohifserve")
    data = init_data_dir(root / "data")
    pw = root / "data.pw"
    import subprocess

    subprocess.run(CLI + ["user", "add", "tess", "--role", "technologist", "--password-file", str(pw), "--data",
                          str(data)], check=True, capture_output=True)
    server = Server(data, env={"PACS_HTTP_PUBLIC_URL": "https://pacs.clinic.example/"}).start()
    yield {"server": server, "data": data, "root": root}
    server.kill()


def session(base, user="admin"):
    s = requests.Session()
    page = s.get(f"{base}/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    form = {"username": user, "password": ADMIN_PASSWORD}
    if token:
        form["csrf_token"] = token.group(1)
    assert s.post(f"{base}/login", data=form).status_code == 200
    return s


def test_not_installed_says_how(box):
    base = box["server"].url
    r = requests.get(f"{base}/ohif/", allow_redirects=False)
    assert r.status_code in (302, 303) and "/login" in r.headers["Location"]  # signed in first
    r = session(base).get(f"{base}/ohif/")
    assert r.status_code == 404 and "pacs-appliance ohif install" in r.text


def test_install_refuses_other_packages(box):
    bad = make_tarball(box["root"] / "other.tgz", name="left-pad")
    done = run_cli("ohif", "install", bad, "--data", box["data"], check=False)
    assert done.returncode != 0 and "not @ohif/app" in done.stderr


def test_install_refuses_names_outside_the_dist_folder(box):
    bad = make_tarball(box["root"] / "escape.tgz", extra=(("package/dist/../../../escaped.txt", "x"),))
    done = run_cli("ohif", "install", bad, "--data", box["data"], check=False)
    assert done.returncode != 0 and "outside its dist folder" in done.stderr
    assert not any(box["root"].rglob("escaped.txt"))


def test_installed_served_under_ohif_signed_in(box):
    base = box["server"].url
    tarball = make_tarball(box["root"] / "ohif.tgz")
    assert "9.9.9 installed" in run_cli("ohif", "install", tarball, "--data", box["data"]).stdout
    for user in ("admin", "tess"):  # every role that may use the built-in viewer
        s = session(base, user)
        index = s.get(f"{base}/ohif/viewer", params={"StudyInstanceUIDs": "1.2.3"})  # a route: index.html
        assert index.status_code == 200, user
        assert 'window.PUBLIC_URL="/ohif/"' in index.text and 'src="/ohif/app-config.js"' in index.text
        csp = index.headers["Content-Security-Policy"]
        assert "'sha256-" in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
        assert "connect-src 'self'" in csp
    bundle = s.get(f"{base}/ohif/app.bundle.0123456789abcdef.js")
    assert '__webpack_require__.p = "/ohif/"' in bundle.text and "immutable" in bundle.headers["Cache-Control"]
    assert "url(/ohif/a.woff2)" in s.get(f"{base}/ohif/app.bundle.css").text
    assert s.get(f"{base}/ohif/missing.0123456789abcdef.js").status_code == 404  # an asset is not a route
    config = s.get(f"{base}/ohif/app-config.js")
    assert "secret" not in config.text  # generated, never the tarball's
    cfg = json.loads(config.text.split("=", 1)[1].rstrip().rstrip(";"))
    source = cfg["dataSources"][0]["configuration"]
    assert source["qidoRoot"] == source["wadoRoot"] == "https://pacs.clinic.example/dicomweb"
    assert cfg["routerBasename"] == "/ohif" and "auth" not in config.text and "requestOptions" not in config.text
    # the rest of the web UI keeps its strict CSP
    assert "'unsafe-eval'" not in s.get(f"{base}/studies").headers["Content-Security-Policy"]


def test_public_url_in_dicomweb_urls(box):
    base = box["server"].url
    http = requests.Session()
    http.auth = ("admin", ADMIN_PASSWORD)
    ds = synth.make_instance("CT", patient_id="PUBURL1")
    DICOMwebClient(url=f"{base}/dicomweb", session=http).store_instances([ds])
    meta = http.get(f"{base}/dicomweb/studies/{ds.StudyInstanceUID}/metadata",
                    headers={"Accept": "application/dicom+json"}).json()
    assert meta[0]["7FE00010"]["BulkDataURI"].startswith(
        f"https://pacs.clinic.example/dicomweb/studies/{ds.StudyInstanceUID}/")
    found = http.get(f"{base}/dicomweb/studies", params={"PatientID": "PUBURL1"}).json()
    assert found[0]["00081190"]["Value"][0] == f"https://pacs.clinic.example/dicomweb/studies/{ds.StudyInstanceUID}"


def test_study_page_links_to_ohif_when_installed(box):
    base = box["server"].url
    http = requests.Session()
    http.auth = ("admin", ADMIN_PASSWORD)
    ds = synth.make_instance("CT", patient_id="LINK1")
    DICOMwebClient(url=f"{base}/dicomweb", session=http).store_instances([ds])
    page = session(base).get(f"{base}/studies/{ds.StudyInstanceUID}")
    assert page.status_code == 200
    assert f"/ohif/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}" in page.text and "Open in OHIF" in page.text


def test_public_url_must_be_an_address(tmp_path):
    from appliance.config import ConfigError, load

    assert load(tmp_path, env={"PACS_HTTP_PUBLIC_URL": "https://pacs.clinic.lan/pacs/"}).http.public_url
    for bad in ("pacs.clinic.lan", "ftp://x", "https://", "https://x/?a=b"):
        with pytest.raises(ConfigError, match="public_url"):
            load(tmp_path, env={"PACS_HTTP_PUBLIC_URL": bad})
