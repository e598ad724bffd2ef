"""A real OpenSSH server for the SFTP target tests, on 127.0.0.1 with its own host key and config."""
from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path

from helpers import free_port, port_open, wait_until

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Sshd:
    """``sshd -D -f <config>``: key-only login for the current user, internal-sftp, nothing else."""

    def __init__(self, root: Path, host_key: Path | None = None, port: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = host_key or keygen(self.root / "host_key")
        self.client_key = self.root / "client_key"
        if not self.client_key.exists():
            keygen(self.client_key)
        (self.root / "authorized_keys").write_text((self.root / "client_key.pub").read_text())
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
            "Subsystem sftp internal-sftp", "MaxSessions 32", "MaxStartups 32", "LogLevel ERROR", "",
        ]))
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.root / "sshd.log", "ab"))
        wait_until(lambda: self.proc.poll() is not None or port_open(self.port), 10, what="sshd to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # sshd forks a child per connection; it dies when its client goes, or on its own when the master is gone.

    def url(self, path: Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"
