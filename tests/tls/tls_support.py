"""Helpers for the DICOM TLS tests: an appliance with a TLS listener, dcmtk's TLS options."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from helpers import CLI, Server, StoreSCP, free_port, init_data_dir  # noqa: E402
from tls_certs import Pem  # noqa: E402


@dataclass(frozen=True)
class Pki:
    ca: Path  # the clinic's CA certificate
    server: Pem  # the box's certificate, issued by the clinic CA
    client: Pem  # a modality's client certificate, issued by the clinic CA
    stranger_ca: Path
    stranger_client: Pem  # a client certificate from a CA the box does not trust
    stranger_server: Pem  # a peer's server certificate from that CA


def TlsStoreScp(directory: Path, ae_title: str, cert: Pem | None, trusted_ca: Path | None) -> StoreSCP:
    """dcmtk's storescp with TLS (+tls), requiring a client certificate that chains to ``trusted_ca``;
    ``cert`` None: plain DICOM, for a peer wrongly flagged for TLS."""
    tls = [] if cert is None else ["+tls", str(cert.key), str(cert.cert), "+cf", str(trusted_ca)]
    return StoreSCP(directory, ae_title, extra=tls)


def cli(data_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A CLI command on the data directory, with the box's PACS_* settings in ``env``."""
    return subprocess.run(CLI + [*args, "--data", str(data_dir)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def register_peers(data_dir: Path, peers) -> None:
    """Register (AE, host, port[, "--tls"]) peers in-process: a CLI call each costs seconds on a busy box."""
    from appliance.app import build
    from appliance.config import load

    app = build(load(data_dir, env={}), with_web=False)
    try:
        for ae, host, port, *options in peers:
            app.peers.add(ae, host, int(port), tls="--tls" in options)
    finally:
        app.index.close()


def start_tls_box(root: Path, pki: Pki | None, env: dict | None = None, tls_only: bool = False,
                  peers: tuple[tuple[str, ...], ...] = ()) -> Server:
    """A running appliance with a TLS listener on ``box.tls_port``.

    With ``pki`` it uses the clinic CA's server certificate and checks client certificates against
    that CA; without, the box's own self-signed certificate. With ``tls_only`` the plain listener is
    off; the helper then waits for the TLS port instead (``box.dicom_port`` is the TLS port and
    ``box.plain_port`` the one that must stay closed).
    """
    root.mkdir(parents=True, exist_ok=True)
    data_dir = init_data_dir(root / "data")
    if pki is None:  # what first boot does on the appliance image
        subprocess.run(CLI + ["tls", "renew", "--data", str(data_dir), "--hostname", "pacsbox"], check=True,
                       capture_output=True)
    tls_port, plain_port = free_port(), free_port()
    settings = {"PACS_DICOM_TLS_PORT": str(tls_port)}
    if pki is not None:
        settings.update(PACS_DICOM_TLS_CERT=str(pki.server.cert), PACS_DICOM_TLS_KEY=str(pki.server.key),
                        PACS_DICOM_TLS_CA=str(pki.ca))
    if tls_only:
        # Server.start waits for dicom_port: point it at the TLS port, and give the plain port its own.
        settings.update(PACS_DICOM_TLS_ONLY="true", PACS_DICOM_PORT=str(plain_port))
    settings.update(env or {})
    if peers:
        register_peers(data_dir, peers[1:])
        done = cli(data_dir, "modality", "add", *peers[0])  # the first through the CLI, as an admin would
        assert done.returncode == 0, done.stderr
    box = Server(data_dir, env=settings, dicom_port=tls_port if tls_only else 0)
    box.start()
    box.tls_port = tls_port
    box.plain_port = plain_port if tls_only else box.dicom_port
    return box


def tls_options(ca: Path | None, client: Pem | None = None) -> list[str]:
    """dcmtk options for a TLS association: our client certificate (or anonymous TLS), and the CA to trust."""
    options = ["+tls", str(client.key), str(client.cert)] if client is not None else ["+tla"]
    return options + (["+cf", str(ca)] if ca is not None else ["-ic"])
