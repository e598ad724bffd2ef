"""An SFTP target, ``sftp://user@host:port/path``: key-based auth only, the host key pinned.

The server's host key is pinned on first use in a known_hosts file and checked
on every later connection. Atomic put: upload to a temp name,
``fsync@openssh.com``, then the OpenSSH ``posix-rename`` extension (an atomic replace).

Options: ``sftp_key_file`` (an unencrypted private key), ``known_hosts`` (the
pinning file; the service defaults it to <data dir>/keys/backup_known_hosts).
"""
from __future__ import annotations

import logging
import os
import posixpath
import secrets
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from ...errors import ConfigError
from .base import TEMP_PREFIX, TargetError, check_name, copy_exact

log = logging.getLogger(__name__)


class HostKeyError(TargetError):
    """The SFTP server's host key is not the one pinned on first use."""


@dataclass(frozen=True)
class SftpLocation:
    host: str
    port: int
    user: str
    root: str


class SftpTarget:
    """One SSH transport; one SFTP channel per thread (paramiko channels are not shared safely)."""

    SCHEMES = ("sftp",)
    OPTIONS = ("sftp_key_file", "known_hosts")
    EXAMPLE = "sftp://user@host:port/path"

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

    # -- settings --------------------------------------------------------------
    @classmethod
    def parse_url(cls, url: str) -> SftpLocation:
        parts = urlsplit(url)
        if parts.password:
            raise ConfigError("put no password in the SFTP URL: the target uses key-based auth ([backup] sftp_key_file)")
        try:
            port = parts.port or 22
        except ValueError:
            raise ConfigError(f"SFTP target {url!r} has an invalid port: use sftp://user@host:port/path") from None
        if not parts.hostname or not parts.username:
            raise ConfigError(f"SFTP target {url!r} must look like sftp://user@host:port/path")
        return SftpLocation(parts.hostname, port, unquote(parts.username), unquote(parts.path) or "/")

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> "SftpTarget":
        where = cls.parse_url(url)
        key_file, known_hosts = options.get("sftp_key_file"), options.get("known_hosts")
        if not key_file:
            raise ConfigError("an SFTP target needs [backup] sftp_key_file (an unencrypted private key)")
        if not known_hosts:
            raise ConfigError("an SFTP target needs a known_hosts file to pin the server's host key in "
                              "([backup] sftp_known_hosts)")
        return cls(where.host, where.port, where.user, where.root, Path(key_file), Path(known_hosts))

    # -- the Target interface ---------------------------------------------------
    @property
    def sftp(self):
        client = getattr(self._local, "sftp", None)
        if client is None:
            import paramiko

            client = paramiko.SFTPClient.from_transport(self.transport)
            self._local.sftp = client
        return client

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, check_name(name))

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
        tmp = posixpath.join(posixpath.dirname(path), f"{TEMP_PREFIX}{secrets.token_hex(8)}")
        try:
            with self.sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                copy_exact(src, fh, size, name)
                fh.flush()
                self._fsync(fh)
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
        st = fh.stat()  # prefetch needs the size anyway
        if not stat.S_ISREG(st.st_mode):  # OpenSSH opens a directory for reading: it is no blob, as on S3
            fh.close()
            raise FileNotFoundError(name)
        fh.prefetch(st.st_size)
        return fh

    def size(self, name: str) -> int | None:
        try:
            st = self.sftp.stat(self._path(name))
        except FileNotFoundError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        todo = [posixpath.join(self.root, check_name(prefix, prefix=True))]
        while todo:
            d = todo.pop()
            try:
                entries = self.sftp.listdir_attr(d)
            except FileNotFoundError:
                continue
            below = []
            for e in sorted(entries, key=lambda e: e.filename):  # name order (base.Target.list)
                full = posixpath.join(d, e.filename)
                if stat.S_ISDIR(e.st_mode):
                    below.append(full)
                elif not e.filename.startswith(TEMP_PREFIX):
                    yield posixpath.relpath(full, self.root), e.st_size
            todo.extend(reversed(below))  # a stack: the first folder is walked next

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
