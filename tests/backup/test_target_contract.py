"""The contract every backup target keeps (appliance/backup/targets/base.py), run against each kind.

Each target is opened the way the appliance opens it, through the scheme registry,
against a real peer: a folder, OpenSSH's sshd for SFTP, moto's S3 server with
signature and IAM checks switched on (so wrong keys are refused as AWS refuses
them). A new kind of target (WebDAV, Azure, ...) adds one ``*_kit`` fixture and
its line in ``KITS``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import pytest
from helpers import free_port
from sshd import Sshd, keygen

from appliance.backup.targets import TARGETS, Target, TargetError, check_url, open_target
from appliance.errors import ConfigError

BIG = 12 << 20  # above the S3 kit's multipart threshold: several parts


@dataclass
class Kit:
    """How to open one kind of target, and how to open it with credentials the peer refuses."""

    url: str
    options: dict
    refused_url: str  # where the peer refuses us (wrong credentials; for a folder: nothing mounted)
    refused_options: dict
    refused: str  # what the error must say then
    tune: Callable[[Target], None] = field(default=lambda target: None)  # small parts and pages for tests

    def open(self, refused: bool = False) -> Target:
        target = (open_target(self.refused_url, **self.refused_options) if refused
                  else open_target(self.url, **self.options))
        self.tune(target)
        return target


# -- one kit per kind of target ---------------------------------------------------
@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory):
    """moto's S3 server with one bucket and one IAM user allowed to use it; then requests must be signed
    by that user's key (moto's /moto-api/reset-auth switches its IAM checks on)."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "bootstrap",
             "aws_secret_access_key": "bootstrap"}
    boto3.client("s3", **admin).create_bucket(Bucket="contract")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="backup")
    iam.put_user_policy(UserName="backup", PolicyName="bucket", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="backup")["AccessKey"]
    secrets = tmp_path_factory.mktemp("s3-keys")
    (secrets / "access").write_text(key["AccessKeyId"] + "\n")
    (secrets / "secret").write_text(key["SecretAccessKey"] + "\n")
    (secrets / "wrong").write_text("not-the-secret\n")
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    yield endpoint, secrets
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)  # other tests run without
    server.stop()


def folder_kit(tmp_path, request) -> Kit:
    (tmp_path / "nas").mkdir()
    return Kit(f"file://{tmp_path / 'nas'}", {}, f"file://{tmp_path / 'unmounted'}", {},
               "backup folder .*/unmounted does not exist or is not mounted")


def sftp_kit(tmp_path, request) -> Kit:
    server = request.getfixturevalue("sshd_server")
    options = {"sftp_key_file": str(server.client_key), "known_hosts": str(tmp_path / "known_hosts")}
    url = server.url(tmp_path / "remote")
    return Kit(url, options, url, {**options, "sftp_key_file": str(keygen(tmp_path / "stranger"))},
               f"SFTP server 127.0.0.1:{server.port} refused key .*/stranger for user {server.user}")


def s3_kit(tmp_path, request) -> Kit:
    endpoint, secrets = request.getfixturevalue("moto_s3")
    options = {"s3_endpoint_url": endpoint, "s3_region": "us-east-1",
               "s3_access_key_file": str(secrets / "access"), "s3_secret_key_file": str(secrets / "secret")}

    def small_parts_and_pages(target):
        target.transfer.multipart_threshold, target.transfer.multipart_chunksize = 8 << 20, 5 << 20
        target.page_size = 7

    url = f"s3://contract/{tmp_path.name}"
    return Kit(url, options, url, {**options, "s3_secret_key_file": str(secrets / "wrong")},
               "S3 listing failed at s3://contract/.*: the storage refused the credentials; check "
               "\\[backup\\] s3_access_key_file", small_parts_and_pages)


KITS = {"folder": folder_kit, "sftp": sftp_kit, "s3": s3_kit}


@pytest.fixture(params=sorted(KITS))
def kit(request, tmp_path) -> Kit:
    return KITS[request.param](tmp_path, request)


@pytest.fixture
def target(kit):
    opened = kit.open()
    yield opened
    opened.close()


# -- helpers --------------------------------------------------------------------
def put(target, name: str, data: bytes) -> None:
    target.put(name, io.BytesIO(data), len(data))


def read(target, name: str) -> bytes:
    with target.open(name) as fh:
        return fh.read()


def listing(target, prefix: str = "") -> dict[str, int]:
    return dict(target.list(prefix))


class Stream(io.RawIOBase):
    """A non-seekable source of ``size`` pseudo-random bytes, like an archive file behind the throttle.

    ``gate_at``: after that many bytes, say so (``reached``) and wait for ``release``; ``fail_at``: raise there.
    """

    def __init__(self, size: int, seed: int = 1, gate_at: int | None = None, fail_at: int | None = None):
        self.size, self.pos, self.seed = size, 0, seed
        self.gate_at, self.fail_at = gate_at, fail_at
        self.reached, self.release = threading.Event(), threading.Event()

    @staticmethod
    def content(size: int, seed: int = 1) -> bytes:
        return Stream(size, seed).read()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.size - self.pos, 64 * 1024)
        if self.gate_at is not None and self.pos >= self.gate_at and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(60), "the test never released the upload"
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise OSError("the archive disk failed while reading")
        block = hashlib.shake_256(f"{self.seed}:{self.pos // 65536}".encode()).digest(65536)
        start = self.pos % 65536
        n = min(n, 65536 - start)
        b[:n] = block[start:start + n]
        self.pos += n
        return n


# -- the contract -----------------------------------------------------------------
def test_a_new_target_is_empty(target):
    assert listing(target) == {} and listing(target, "objects") == {}
    assert target.size("config") is None
    with pytest.raises(FileNotFoundError):
        target.open("config")
    target.delete("config")  # deleting what is not there is fine


def test_put_open_size_list_delete(target, kit):
    blobs = {"config": b'{"format": 1}', "keyring.sealed": os.urandom(300), "objects/ab/ab01": os.urandom(5000),
             "objects/ab/ab02": b"", "objects/cd/cd01": os.urandom(70_000), "manifests/2026-x": os.urandom(99)}
    for name, data in blobs.items():
        put(target, name, data)
    for name, data in blobs.items():
        assert read(target, name) == data and target.size(name) == len(data)
    assert listing(target) == {n: len(d) for n, d in blobs.items()}
    assert listing(target, "objects") == {n: len(d) for n, d in blobs.items() if n.startswith("objects/")}
    assert listing(target, "objects/ab") == {"objects/ab/ab01": 5000, "objects/ab/ab02": 0}

    target.delete("objects/ab/ab01")
    target.delete("objects/ab/ab01")
    assert target.size("objects/ab/ab01") is None and "objects/ab/ab01" not in listing(target)
    with pytest.raises(FileNotFoundError):
        target.open("objects/ab/ab01")
    assert target.url.startswith(kit.url.split("://")[0] + "://")

    again = kit.open()  # a second connection sees the same blobs
    try:
        assert read(again, "objects/cd/cd01") == blobs["objects/cd/cd01"]
    finally:
        again.close()


def test_listing_is_by_whole_path_parts(target):
    for name in ("objects/a", "objects/b/c", "objectsX/d", "obj"):
        put(target, name, b"1234")
    assert set(listing(target, "objects")) == {"objects/a", "objects/b/c"}
    assert listing(target, "objects/") == listing(target, "objects")
    assert listing(target, "obj") == {} and listing(target, "nothing") == {}
    assert target.size("objects") is None and target.size("objects/b") is None  # a "directory" is no blob
    with pytest.raises(FileNotFoundError):
        target.open("objects/b")


def test_listing_many_blobs_is_complete(target):
    names = {f"objects/{i % 3:02x}/{i:032x}": i for i in range(23)}  # several pages on the S3 kit
    for name, n in names.items():
        put(target, name, bytes(n))
    assert listing(target, "objects") == names


def test_put_replaces_an_existing_blob_whole(target):
    put(target, "config", b"x" * 10_000)
    put(target, "config", b"short")
    assert read(target, "config") == b"short" and target.size("config") == 5
    assert listing(target) == {"config": 5}


def test_large_blob_streams_in_and_out(target):
    target.put("snapshots/big", Stream(BIG), BIG)
    assert target.size("snapshots/big") == BIG and listing(target, "snapshots") == {"snapshots/big": BIG}
    digest = hashlib.sha256()
    with target.open("snapshots/big") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    assert digest.digest() == hashlib.sha256(Stream.content(BIG)).digest()


def test_readers_never_see_a_half_written_blob(target):
    """While an upload hangs half-way, the name shows nothing (new) or the whole old blob (replace)."""
    put(target, "snapshots/old", b"the previous version")
    for name in ("snapshots/new", "snapshots/old"):
        before = target.size(name)
        source = Stream(BIG, seed=2, gate_at=BIG // 2)
        with ThreadPoolExecutor(1) as pool:
            upload = pool.submit(target.put, name, source, BIG)
            assert source.reached.wait(60)
            try:
                assert target.size(name) == before
                assert listing(target) == {"snapshots/old": 20, **({"snapshots/new": BIG} if before else {})}
                if before is None:
                    with pytest.raises(FileNotFoundError):
                        target.open(name)
                else:
                    assert read(target, name) == b"the previous version"
            finally:
                source.release.set()
            upload.result(60)
        assert target.size(name) == BIG
    assert set(listing(target)) == {"snapshots/new", "snapshots/old"}  # no upload leftovers


def test_a_failed_upload_leaves_nothing_and_keeps_the_old_blob(target):
    put(target, "objects/00/kept", b"old content")
    for name in ("objects/00/new", "objects/00/kept"):
        with pytest.raises(OSError, match="archive disk failed"):
            target.put(name, Stream(BIG, fail_at=BIG // 2), BIG)
    assert target.size("objects/00/new") is None
    assert read(target, "objects/00/kept") == b"old content"
    assert listing(target) == {"objects/00/kept": 11}


@pytest.mark.parametrize("data, size, error", [
    (b"abc", 4, "the source ended after 3 of 4 bytes"),
    (b"abcde", 4, "more than the 4 bytes announced"),
    (BIG * b"\0", BIG + 1, f"the source ended after {BIG} of {BIG + 1} bytes"),  # multipart on the S3 kit
])
def test_a_source_of_the_wrong_length_is_refused(target, data, size, error):
    put(target, "objects/00/kept", b"old")
    for name in ("objects/00/new", "objects/00/kept"):
        with pytest.raises(TargetError, match=error):
            target.put(name, io.BytesIO(data), size)
    assert target.size("objects/00/new") is None and read(target, "objects/00/kept") == b"old"
    assert listing(target) == {"objects/00/kept": 3}


def test_put_leaves_the_source_open(target):
    src = io.BytesIO(b"payload")
    target.put("config", src, 7)
    assert not src.closed


def test_parallel_uploads_into_new_directories(target):
    """The sync uploads from a thread pool; directories that appear concurrently must not trip it up."""
    names = [f"objects/{i % 4:02x}/{i:04x}" for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: put(target, n, n.encode() * 100), names))
    assert listing(target, "objects") == {n: len(n) * 100 for n in names}
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda n: read(target, n), names)) == [n.encode() * 100 for n in names]


@pytest.mark.parametrize("name", ["", "{tmp}/escaped", "../escaped", "objects/../../escaped", "a//b", "./config",
                                  "objects/.tmp-0123", "a\\b"])
def test_names_that_could_leave_the_root_are_refused(target, tmp_path, name):
    # Escapes aim into this test's own directory, never at the system: a broken guard must not hurt the box.
    name = name.format(tmp=tmp_path)
    for call in (lambda: put(target, name, b"x"), lambda: target.open(name), lambda: target.size(name),
                 lambda: target.delete(name)):
        with pytest.raises(ValueError, match="invalid offsite name"):
            call()
    with pytest.raises(ValueError, match="invalid offsite name"):
        list(target.list("../"))
    assert listing(target) == {} and not (tmp_path / "escaped").exists()


def test_refused_credentials_say_so(kit):
    with pytest.raises(TargetError, match=kit.refused):
        target = kit.open(refused=True)  # S3 connects on first use
        try:
            listing(target)
        finally:
            target.close()


# -- the registry: schemes and their settings -------------------------------------
def test_registry_opens_every_scheme_with_its_own_class(kit):
    target = kit.open()
    try:
        assert type(target) is TARGETS[kit.url.split("://")[0]]
    finally:
        target.close()


@pytest.mark.parametrize("url, error", [
    ("", "no backup target configured: set \\[backup\\] target \\(file:///path, sftp://user@host:port/path, "
         "s3://bucket/prefix\\)"),
    ("webdav://nas/x", "unknown backup target scheme 'webdav': use file:///path, sftp://user@host:port/path or "
                       "s3://bucket/prefix"),
    ("file://nas/backup", "names host 'nas'.*file:///path"),
    ("file://", "has no path"),
    ("sftp://pacs:secret@nas/backup", "put no password in the SFTP URL"),
    ("sftp://nas/backup", "must look like sftp://user@host:port/path"),
    ("sftp://pacs@nas:port/backup", "invalid port"),
    ("s3://key:secret@bucket/box", "put no credentials in the S3 URL"),
    ("s3:///box", "must look like s3://bucket/prefix"),
])
def test_each_scheme_checks_its_own_url(url, error):
    with pytest.raises(ConfigError, match=error):
        check_url(url)
    with pytest.raises(ConfigError, match=error):
        open_target(url)


def test_plain_paths_are_folders_and_options_are_checked(tmp_path):
    check_url(str(tmp_path))
    target = open_target(str(tmp_path), sftp_key_file="", s3_region="")  # other schemes' options are ignored
    assert type(target) is TARGETS["file"] and target.root == tmp_path
    with pytest.raises(TypeError, match="unknown target options \\['sftp_key'\\]"):
        open_target(str(tmp_path), sftp_key="x")


def test_settings_each_scheme_needs(tmp_path):
    with pytest.raises(ConfigError, match="needs \\[backup\\] sftp_key_file"):
        open_target("sftp://pacs@127.0.0.1/x", known_hosts=str(tmp_path / "kh"))
    with pytest.raises(ConfigError, match="SSH key .*/missing not found"):
        open_target("sftp://pacs@127.0.0.1/x", sftp_key_file=str(tmp_path / "missing"),
                    known_hosts=str(tmp_path / "kh"))
    with pytest.raises(ConfigError, match="cannot read the S3 credentials file"):
        open_target("s3://bucket/box", s3_access_key_file=str(tmp_path / "missing"))
