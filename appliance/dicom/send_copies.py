"""Sending objects that are not in the archive (an anonymized copy, corrections/anonymize.py) to a peer
with C-STORE: one association, each object made and sent in turn, so a study is never held whole."""
from __future__ import annotations

import io
import logging
from typing import Iterable

import pydicom

from ..convert.transcode import TranscodeError, choose, to_syntax
from .scu import SendError, accepted_syntaxes, associate, storage_contexts

log = logging.getLogger(__name__)
OK = (0x0000, 0xB000, 0xB006, 0xB007)


def send_copies(our_ae: str, peer, tls_args, pairs: Iterable[tuple[str, str]], blobs: Iterable[bytes],
                timeout: float = 30.0) -> tuple[int, list[str]]:
    """C-STORE each Part 10 ``blobs`` item to ``peer`` (its SOP class and syntax among ``pairs``, which
    set the presentation contexts). Returns (sent, one reason per object that was not sent)."""
    assoc = associate(our_ae, peer.ae_title, peer.host, peer.port, storage_contexts(pairs), timeout, tls_args)
    sent, failed = 0, []
    try:
        for data in blobs:
            ds = pydicom.dcmread(io.BytesIO(data))
            syntax = str(ds.file_meta.TransferSyntaxUID)
            try:
                target = choose(syntax, accepted_syntaxes(assoc, ds.SOPClassUID))
            except TranscodeError as exc:
                failed.append(str(exc))
                continue
            if target != syntax:
                ds = pydicom.dcmread(io.BytesIO(to_syntax(data, syntax, target)))
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise SendError(f"{peer.ae_title} did not answer a C-STORE (timeout or association lost)")
            if int(code) in OK:
                sent += 1
            else:
                failed.append(f"{peer.ae_title} refused an object with status 0x{int(code):04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return sent, failed
