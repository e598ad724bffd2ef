"""The Python ceiling: a bare pynetdicom storage SCP that only writes each object to a file and fsyncs it.

No parsing beyond what pynetdicom does, no index, no encryption. With ``--tune`` it
sets TCP_NODELAY and re-arms TCP_QUICKACK on accepted sockets like the appliance does.

    python bench/bare_scp.py --port 11113 --dir /tmp/out [--tune]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--tune", action="store_true", help="TCP_NODELAY + TCP_QUICKACK on accepted sockets")
    p.add_argument("--max-pdu", type=int, default=262144, help="as the appliance's default dicom.max_pdu")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    _config.UNRESTRICTED_STORAGE_SERVICE = True

    def on_store(event):
        path = args.dir / uuid.uuid4().hex
        with open(path, "wb") as fh:
            fh.write(event.encoded_dataset())
            fh.flush()
            os.fsync(fh.fileno())
        return 0x0000

    ae = AE(ae_title="BARESCP")
    ae.maximum_associations = 16
    ae.maximum_pdu_size = args.max_pdu
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context("1.2.840.10008.1.1", ALL_TRANSFER_SYNTAXES)
    handlers = [(evt.EVT_C_STORE, on_store)]
    if args.tune:
        from appliance.dicom.sockets import tune_accepted_socket

        handlers.append((evt.EVT_CONN_OPEN, tune_accepted_socket))
    server = ae.start_server(("127.0.0.1", args.port), block=False, evt_handlers=handlers)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
