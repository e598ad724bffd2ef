"""Offsite targets behind one small interface: a folder, SFTP, S3.

A target stores opaque blobs under slash-separated names (the layout is in
__init__.py). Every ``put`` is atomic: a reader sees either no blob or the
whole blob under its final name, never a half-written one.

- folder (``file:///mnt/nas/pacs`` or a plain path): temp file, fsync, rename,
  fsync the directory;
- SFTP (``sftp://user@host:port/path``): key-based auth only; the server's host
  key is pinned on first use in a known_hosts file and checked on every later
  connection; upload to a temp name, ``fsync@openssh.com``, then the OpenSSH
  ``posix-rename`` extension (an atomic replace);
- S3 (``s3://bucket/prefix``): one PUT, or a multipart upload that becomes
  visible only when completed; both are atomic in S3 semantics.
"""
from __future__ import annotations

import io
import logging
import os
import posixpath
import secrets
import socket
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol
from urllib.parse import unquote, urlsplit

from ..archive.fsutil import fsync_dir
from ..errors import ApplianceError, ConfigError

log = logging.getLogger(__name__)
COPY_BLOCK = 256 * 1024


class TargetError(ApplianceError):
    """The offsite target cannot be reached or refused an operation."""

    exit_code = 5


class HostKeyError(TargetError):
    """The SFTP server's host key is not the one pinned on first use."""


class Target(Protocol):
    url: str  # printable, without credentials

    def put(self, name: str, src: BinaryIO, size: int) -> None: ...
    def open(self, name: str) -> BinaryIO: ...  # raises FileNotFoundError
    def size(self, name: str) -> int | None: ...
    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...  # (name, size) of blobs under prefix/
    def delete(self, name: str) -> None: ...
    def close(self) -> None: ...


class Throttle:
    """A token bucket shared by all uploads: at most ``rate`` bytes/s on average (0 = no cap)."""

    def __init__(self, rate: int):
        self.rate = rate
        self._lock = threading.Lock()
        self._allowance = float(rate)
        self._last = time.monotonic()

    def consume(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate) - n
            self._last = now
            wait = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if wait:
            time.sleep(wait)


class ThrottledReader(io.RawIOBase):
    """Wraps a readable so every byte read passes through a Throttle and a byte counter."""

    def __init__(self, src: BinaryIO, throttle: Throttle | None, on_bytes=None):
        self.src, self.throttle, self.on_bytes = src, throttle, on_bytes

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes unless the end comes first (boto3 takes a short read for the end)."""
        parts, want = [], (1 << 62) if n is None or n < 0 else n
        while want:
            data = self.src.read(min(want, COPY_BLOCK))
            if not data:
                break
            if self.throttle:
                self.throttle.consume(len(data))
            if self.on_bytes:
                self.on_bytes(len(data))
            parts.append(data)
            want -= len(data)
        return b"".join(parts)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _copy(src: BinaryIO, dst) -> int:
    total = 0
    while True:
        block = src.read(COPY_BLOCK)
        if not block:
            return total
        dst.write(block)
        total += len(block)


# -- folder ----------------------------------------------------------------
class FolderTarget:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"
        self._dirs: set[Path] = set()
        if not self.root.is_dir():
            raise TargetError(f"backup folder {self.root} does not exist or is not mounted: create or mount it first")

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, src: BinaryIO, size: int) -> None:
        path = self._path(name)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
        try:
            with open(tmp, "wb") as fh:
                written = _copy(src, fh)
                fh.flush()
                os.fsync(fh.fileno())
            if written != size:
                raise TargetError(f"{name}: wrote {written} bytes, expected {size}")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def open(self, name: str) -> BinaryIO:
        return open(self._path(name), "rb")

    def size(self, name: str) -> int | None:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.startswith(".tmp-"):
                    continue
                full = os.path.join(dirpath, f)
                yield os.path.relpath(full, self.root).replace(os.sep, "/"), os.stat(full).st_size

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def close(self) -> None:
        pass


# -- SFTP ------------------------------------------------------------------
class SftpTarget:
    """One SSH transport; one SFTP channel per thread (paramiko channels are not shared safely)."""

    def __init__(self, host: str, port: int, user: str, root: str, key_file: Path, known_hosts: Path,
                 timeout: float = 20.0):
        import paramiko

        self.url = f"sftp://{user}@{host}:{port}{root}"
        self.root = root.rstrip("/") or "/"
        self._local = threading.local()
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()
        self._has_fsync: bool | None = None
        try:
            pkey = paramiko.PKey.from_path(str(key_file))
        except FileNotFoundError:
            raise ConfigError(f"SSH key {key_file} not found: set [backup] sftp_key_file") from None
        except (paramiko.SSHException, ValueError) as exc:
            raise ConfigError(f"SSH key {key_file} cannot be read ({exc}); it must be unencrypted") from None
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TargetError(f"cannot connect to SFTP server {host}:{port}: {exc}") from None
        self.transport = paramiko.Transport(sock)
        try:
            self.transport.start_client(timeout=timeout)
            check_host_key(known_hosts, host, port, self.transport.get_remote_server_key())
            self.transport.auth_publickey(user, pkey)
        except paramiko.AuthenticationException:
            self.transport.close()
            raise TargetError(f"SFTP server {host}:{port} refused key {key_file} for user {user}") from None
        except paramiko.SSHException as exc:
            self.transport.close()
            raise TargetError(f"SSH handshake with {host}:{port} failed: {exc}") from None
        except BaseException:
            self.transport.close()
            raise
        self.transport.set_keepalive(30)

    @property
    def sftp(self):
        client = getattr(self._local, "sftp", None)
        if client is None:
            import paramiko

            client = paramiko.SFTPClient.from_transport(self.transport)
            self._local.sftp = client
        return client

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def _mkdirs(self, directory: str) -> None:
        with self._dirs_lock:
            if directory in self._dirs:
                return
        parts, d = [], directory
        while d not in ("/", "") and d not in self._dirs:
            parts.append(d)
            d = posixpath.dirname(d)
        for d in reversed(parts):
            try:
                self.sftp.mkdir(d)
            except OSError:
                try:  # it exists already (or it is an error we report below)
                    if not stat.S_ISDIR(self.sftp.stat(d).st_mode):
                        raise TargetError(f"{d} on the SFTP server is not a directory") from None
                except FileNotFoundError:
                    raise TargetError(f"cannot create {d} on the SFTP server (permissions?)") from None
        with self._dirs_lock:
            self._dirs.add(directory)

    def put(self, name: str, src: BinaryIO, size: int) -> None:
        path = self._path(name)
        self._mkdirs(posixpath.dirname(path))
        tmp = posixpath.join(posixpath.dirname(path), f".tmp-{secrets.token_hex(8)}")
        try:
            with self.sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                written = _copy(src, fh)
                fh.flush()
                self._fsync(fh)
            if written != size:
                raise TargetError(f"{name}: wrote {written} bytes, expected {size}")
            self.sftp.posix_rename(tmp, path)
        except BaseException:
            try:
                self.sftp.remove(tmp)
            except Exception:  # noqa: BLE001 - best effort; a stray .tmp- is ignored by list()
                pass
            raise

    def _fsync(self, fh) -> None:
        """OpenSSH's fsync@openssh.com, so the renamed object survives a power cut on the server.

        paramiko has no public call for it; the server handles requests in order, so every
        pipelined write before it is on disk when it returns. Servers without it just skip this.
        """
        if self._has_fsync is False:
            return
        from paramiko.sftp import CMD_EXTENDED

        try:
            self.sftp._request(CMD_EXTENDED, "fsync@openssh.com", fh.handle)
            self._has_fsync = True
        except OSError:
            self._has_fsync = False
            log.warning("the SFTP server does not support fsync@openssh.com; objects are renamed unsynced")

    def open(self, name: str) -> BinaryIO:
        fh = self.sftp.open(self._path(name), "rb")
        fh.prefetch()
        return fh

    def size(self, name: str) -> int | None:
        try:
            return self.sftp.stat(self._path(name)).st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        todo = [self._path(prefix)]
        while todo:
            d = todo.pop()
            try:
                entries = self.sftp.listdir_attr(d)
            except FileNotFoundError:
                continue
            for e in entries:
                full = posixpath.join(d, e.filename)
                if stat.S_ISDIR(e.st_mode):
                    todo.append(full)
                elif not e.filename.startswith(".tmp-"):
                    yield posixpath.relpath(full, self.root), e.st_size

    def delete(self, name: str) -> None:
        try:
            self.sftp.remove(self._path(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.transport.close()


def check_host_key(known_hosts: Path, host: str, port: int, key) -> None:
    """Pin the server's key on first use; refuse a different key afterwards."""
    import paramiko

    entry = host if port == 22 else f"[{host}]:{port}"
    store = paramiko.HostKeys()
    if known_hosts.exists():
        store.load(str(known_hosts))
    pinned = store.lookup(entry)
    if pinned is None:
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        store.add(entry, key.get_name(), key)
        store.save(str(known_hosts))
        os.chmod(known_hosts, 0o600)
        log.warning("SFTP host %s: pinned its %s host key on first use (%s)", entry, key.get_name(),
                    key.fingerprint)
        return
    if pinned.get(key.get_name()) != key:
        raise HostKeyError(
            f"the SFTP server {entry} presented a host key that differs from the one pinned in {known_hosts}: "
            "someone may be intercepting the connection. If the server was really reinstalled, remove its "
            "line from that file and run the backup again"
        )


# -- S3 --------------------------------------------------------------------
class S3Target:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str = "", region: str = "",
                 access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        session = boto3.session.Session()
        self.client = session.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32),
        )
        from boto3.s3.transfer import TransferConfig

        # Large objects go multipart (visible only once completed); no extra threads: we run our own pool.
        self.transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, use_threads=False)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, exc, what: str):
        return TargetError(f"S3 {what} failed at {self.url}: {exc}")

    def put(self, name: str, src: BinaryIO, size: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        counted = [0]
        reader = ThrottledReader(src, None, lambda k: counted.__setitem__(0, counted[0] + k))
        try:
            self.client.upload_fileobj(reader, self.bucket, self._key(name), Config=self.transfer)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"upload of {name}") from None
        if counted[0] != size or reader.read(1):  # every byte, and nothing after: a short upload is an error
            self.delete(name)
            raise TargetError(f"{name}: uploaded {counted[0]} bytes, expected {size}")

    def open(self, name: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(name) from None
            raise self._error(exc, f"download of {name}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"download of {name}") from None

    def size(self, name: str) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error(exc, f"stat of {name}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"stat of {name}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/") + "/")):
                for item in page.get("Contents", ()):
                    yield item["Key"][start:], item["Size"]
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "listing") from None

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"delete of {name}") from None

    def close(self) -> None:
        self.client.close()


# -- opening a target from its URL -------------------------------------------
def _read_secret(path: str) -> str | None:
    return Path(path).read_text(encoding="utf-8").strip() if path else None


def open_target(url: str, *, sftp_key_file: str = "", known_hosts: Path | None = None, s3_endpoint_url: str = "",
                s3_region: str = "", s3_access_key_file: str = "", s3_secret_key_file: str = "") -> Target:
    """Open the target named by ``url``; credentials come from files or the environment, never the URL."""
    if not url:
        raise ConfigError("no backup target configured: set [backup] target (file:///..., sftp://..., s3://...)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        return FolderTarget(Path(unquote(parts.path if scheme else url)))
    if scheme == "sftp":
        if parts.password:
            raise ConfigError("put no password in the SFTP URL: the target uses key-based auth ([backup] sftp_key_file)")
        if not parts.hostname or not parts.username:
            raise ConfigError(f"SFTP target {url!r} must look like sftp://user@host:port/path")
        if not sftp_key_file:
            raise ConfigError("an SFTP target needs [backup] sftp_key_file (an unencrypted private key)")
        return SftpTarget(parts.hostname, parts.port or 22, parts.username, unquote(parts.path) or "/",
                          Path(sftp_key_file), known_hosts or Path("backup_known_hosts"))
    if scheme == "s3":
        if not parts.hostname:
            raise ConfigError(f"S3 target {url!r} must look like s3://bucket/prefix")
        try:
            access, secret = _read_secret(s3_access_key_file), _read_secret(s3_secret_key_file)
        except OSError as exc:
            raise ConfigError(f"cannot read the S3 credentials file: {exc}") from None
        return S3Target(parts.netloc, unquote(parts.path), s3_endpoint_url, s3_region, access, secret)
    raise ConfigError(f"unknown backup target scheme {scheme!r}: use file://, sftp:// or s3://")
