"""Every stored transfer syntax reaches every kind of receiver, by C-MOVE, C-GET and forwarding alike.

One appliance stores one small object per syntax, all in one study. Each receiver kind
gets the whole study once per way out (one association per cell group): dcmtk storescp
and getscu where an option makes the receiver (+xa, +xi, +xb, +xs/+xy/+xv), a pynetdicom
peer where none does (explicit VR little endian only). ``EXPECTED`` writes down, per
cell, the syntax the receiver must get the object in; ``transcode.choose`` is the rule:
the stored syntax when the receiver accepted it, else explicit, else implicit VR little
endian, never a syntax the box cannot produce. An exact cell must arrive byte-identical,
a transcoded one with the same pixels.
"""
from __future__ import annotations

import io
import subprocess
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
import readback
import synth
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1,
                         JPEGLSLossless, RLELossless)
from pynetdicom import AE, StoragePresentationContexts, _config, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove
from retrieval_support import SCU_AE, StoreSCP, dataset_bytes, free_port, start_box, wait_until

from appliance.convert.transcode import choose

SOURCE_AE = "MATRIX"  # what stores the objects; forwarding rules pick it by calling AE
# stored syntax name -> (synth sample, its transfer syntax)
STORED = {
    "implicit": ("MR_IMPLICIT", ImplicitVRLittleEndian),
    "explicit": ("MR", ExplicitVRLittleEndian),
    "big-endian": ("MR_BIG_ENDIAN", ExplicitVRBigEndian),
    "deflated": ("DEFLATED", DeflatedExplicitVRLittleEndian),
    "jpeg-baseline": ("SC_JPEG", JPEGBaseline8Bit),
    "jpeg-lossless": ("SC_JPEG_LOSSLESS", JPEGLosslessSV1),
    "jpeg-ls": ("MR_JPEG_LS", JPEGLSLossless),
    "jpeg2000": ("MR_J2K", JPEG2000Lossless),
    "rle": ("MR_RLE", RLELossless),
}
ELE, ILE, BE = ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian
EXACT = "exact"  # the stored syntax, byte-identical

# Receivers of C-MOVE and forwarding (the box proposes: one context per stored syntax, one [ELE, ILE]).
PUSH_RECEIVERS = ("accept-all", "implicit-only", "explicit-le-only", "big-endian-preferring", "compressed-first")
# Receivers of C-GET (the requestor proposes, the box accepts one syntax per context).
GET_RECEIVERS = ("accept-all", "implicit-only", "explicit-le-only", "big-endian-preferring",
                 "compressed-first +xs", "compressed-first +xy", "compressed-first +xv")

# The outcome of every cell: receiver -> stored syntax -> the syntax it arrives in.
_ALL_EXACT = {name: EXACT for name in STORED}
_ALL = lambda ts: {name: ts for name in STORED}  # noqa: E731
PUSH_EXPECTED = {
    "accept-all": _ALL_EXACT,  # storescp +xa takes every stored syntax as proposed
    "implicit-only": {**_ALL(ILE), "implicit": EXACT},  # storescp +xi
    "explicit-le-only": {**_ALL(ELE), "explicit": EXACT},  # pynetdicom: ELE only
    # storescp +xb takes the three uncompressed syntaxes as proposed, the rest decoded to ELE
    "big-endian-preferring": {**_ALL(ELE), "implicit": EXACT, "explicit": EXACT, "big-endian": EXACT},
    # storescp +xs: JPEG lossless and the uncompressed syntaxes as proposed, the rest decoded
    "compressed-first": {**_ALL(ELE), "implicit": EXACT, "explicit": EXACT, "big-endian": EXACT,
                         "jpeg-lossless": EXACT},
}
GET_EXPECTED = {
    "accept-all": _ALL_EXACT,  # pynetdicom proposes one context per syntax: the box takes each
    "implicit-only": {**_ALL(ILE), "implicit": EXACT},  # pynetdicom: ILE only (getscu 3.6.7 +xi proposes ELE)
    "explicit-le-only": {**_ALL(ELE), "explicit": EXACT},  # pynetdicom: ELE only
    # getscu proposes one context per SOP class with several syntaxes; the box accepts the one it can
    # always produce (explicit VR little endian), so the other stored syntaxes are decoded
    "big-endian-preferring": {**_ALL(ELE), "explicit": EXACT},  # getscu +xb
    "compressed-first +xs": {**_ALL(ELE), "explicit": EXACT},  # JPEG lossless offered first: not taken
    "compressed-first +xy": {**_ALL(ELE), "explicit": EXACT},  # JPEG baseline offered first
    "compressed-first +xv": {**_ALL(ELE), "explicit": EXACT},  # JPEG 2000 lossless offered first
}
FORWARD_EXPECTED = PUSH_EXPECTED  # forwarding proposes like C-MOVE


def storescp_args(kind: str) -> tuple[bool, list[str]]:
    return {"accept-all": (True, []), "implicit-only": (False, ["+xi"]),
            "big-endian-preferring": (False, ["+xb"]), "compressed-first": (False, ["+xs"])}[kind]


class PynetReceiver:
    """A pynetdicom storage SCP accepting only ``syntaxes``; keeps (transfer syntax, Part 10 bytes) per UID."""

    def __init__(self, ae_title: str, syntaxes: list[str]):
        self.ae_title, self.port, self.received = ae_title, free_port(), {}
        self.ae = AE(ae_title)
        for cx in StoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, syntaxes)
        self.server = None

    def on_store(self, event):
        ts = event.context.transfer_syntax
        buf = io.BytesIO()
        buf.write(b"\0" * 128 + b"DICM")
        from pydicom.filewriter import write_file_meta_info

        meta = event.file_meta
        meta.TransferSyntaxUID = ts
        write_file_meta_info(buf, meta)
        buf.write(event.request.DataSet.getvalue())
        self.received[str(event.request.AffectedSOPInstanceUID)] = buf.getvalue()
        return 0x0000

    def start(self):
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        return self

    def files(self) -> dict[str, bytes]:
        return dict(self.received)

    def stop(self):
        if self.server:
            self.server.shutdown()


class ScpReceiver:
    """dcmtk storescp as a receiver kind; its files by SOP Instance UID."""

    def __init__(self, root: Path, ae_title: str, kind: str):
        accept_all, extra = storescp_args(kind)
        self.scp = StoreSCP(root / ae_title, ae_title=ae_title, accept_all=accept_all, extra=["+B", *extra])
        self.ae_title, self.port = ae_title, self.scp.port

    def start(self):
        self.scp.start()
        return self

    def files(self) -> dict[str, bytes]:
        return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f.read_bytes() for f in self.scp.files()}

    def stop(self):
        self.scp.stop()


def make_receiver(root: Path, ae_title: str, kind: str):
    if kind == "explicit-le-only":
        return PynetReceiver(ae_title, [ExplicitVRLittleEndian])
    return ScpReceiver(root, ae_title, kind)


def ae_of(prefix: str, kind: str) -> str:
    short = {"accept-all": "ALL", "implicit-only": "ILE", "explicit-le-only": "ELE", "big-endian-preferring": "BE",
             "compressed-first": "CMP"}[kind]
    return f"{prefix}_{short}"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    # appliance.dicom.node turns on unrestricted storage for the whole process when a test imports it: the
    # pynetdicom receivers here must accept only what they list
    unrestricted, _config.UNRESTRICTED_STORAGE_SERVICE = _config.UNRESTRICTED_STORAGE_SERVICE, False
    root = tmp_path_factory.mktemp("matrix")
    move_rx = {k: make_receiver(root, ae_of("MV", k), k) for k in PUSH_RECEIVERS}
    fwd_rx = {k: make_receiver(root, ae_of("FW", k), k) for k in PUSH_RECEIVERS}
    peers = [(r.ae_title, r.port) for r in (*move_rx.values(), *fwd_rx.values())] + [(SOURCE_AE, free_port())]
    rules = ",".join(f"{r.ae_title} calling={SOURCE_AE}" for r in fwd_rx.values())
    box = start_box(root / "box", env={"PACS_FORWARD_RULES": rules, "PACS_FORWARD_RETRY_INITIAL_SECONDS": "1",
                                       "PACS_FORWARD_RETRY_MAX_SECONDS": "1"}, peers=tuple(peers))
    for r in (*move_rx.values(), *fwd_rx.values()):
        r.start()
    try:
        study_uid = pydicom.uid.generate_uid()
        objects = {}
        for name, (sample, ts) in STORED.items():
            ds = synth.make_instance(sample, patient_id="MATRIX1", study_uid=study_uid)
            assert ds.file_meta.TransferSyntaxUID == ts, name
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            objects[name] = (ds.SOPInstanceUID, buf.getvalue())
        store_exact(box, objects)
        stored = readback.stored(box.data_dir)
        for name, (uid, _raw) in objects.items():
            assert pydicom.dcmread(io.BytesIO(stored[uid])).file_meta.TransferSyntaxUID == STORED[name][1], name
        yield {"box": box, "root": root, "study": study_uid, "stored": {n: (u, stored[u]) for n, (u, _) in
                                                                          objects.items()},
               "move": move_rx, "forward": fwd_rx}
    finally:
        for r in (*move_rx.values(), *fwd_rx.values()):
            r.stop()
        box.kill()
        _config.UNRESTRICTED_STORAGE_SERVICE = unrestricted


def store_exact(box, objects):
    """C-STORE every object in its own syntax (one exact context each), as a modality would send it."""
    ae = AE(SOURCE_AE)
    for _uid, raw in objects.values():
        ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    try:
        for _uid, raw in objects.values():
            rsp = assoc.send_c_store(pydicom.dcmread(io.BytesIO(raw)))
            assert rsp.Status == 0x0000
    finally:
        assoc.release()


def check_cell(way: str, receiver: str, name: str, expected: str, stored: tuple[str, bytes], got: dict):
    uid, raw = stored
    where = f"{way} / {receiver} / stored {name}"
    assert uid in got, f"{where}: never arrived"
    received = pydicom.dcmread(io.BytesIO(got[uid]))
    ts = received.file_meta.TransferSyntaxUID
    original = pydicom.dcmread(io.BytesIO(raw))
    if expected == EXACT:
        assert ts == original.file_meta.TransferSyntaxUID, f"{where}: arrived as {ts.name}"
        assert dataset_bytes(got[uid]) == dataset_bytes(raw), f"{where}: not byte-identical"
    else:
        assert ts == expected, f"{where}: arrived as {ts.name}, expected {UID(expected).name}"
        assert received.SOPInstanceUID == uid
        assert np.array_equal(received.pixel_array, original.pixel_array), f"{where}: pixels differ"


def check_row(way: str, receiver: str, expected: dict, stored: dict, got: dict):
    failures = []
    for name, want in expected[receiver].items():
        try:
            check_cell(way, receiver, name, want, stored[name], got)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)


def test_expected_cells_follow_the_one_rule():
    """The written outcomes are what ``transcode.choose`` gives for what each receiver accepts."""
    for name, (_sample, ts) in STORED.items():
        assert choose(ts, [ts, ELE, ILE]) == ts
        assert choose(ts, [ILE]) == (ts if ts == ILE else ILE)
        assert choose(ts, [ELE, ILE]) == (ts if ts in (ELE, ILE) else ELE)
        with pytest.raises(Exception, match="never compresses"):
            choose(ts, [t for t in (JPEGLSLossless, JPEGBaseline8Bit) if t != ts])


@pytest.mark.parametrize("receiver", PUSH_RECEIVERS)
def test_c_move(matrix, receiver):
    rx = matrix["move"][receiver]
    ae = AE(SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", matrix["box"].dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = matrix["study"]
    try:
        final = list(assoc.send_c_move(identifier, rx.ae_title, StudyRootQueryRetrieveInformationModelMove))[-1][0]
    finally:
        assoc.release()
    assert final.Status == 0x0000, f"C-MOVE to {receiver}: 0x{final.Status:04X}"
    check_row("C-MOVE", receiver, PUSH_EXPECTED, matrix["stored"], rx.files())


def test_forwarding(matrix):
    for receiver in PUSH_RECEIVERS:
        rx = matrix["forward"][receiver]
        wait_until(lambda: len(rx.files()) >= len(STORED), 60, 0.2, what=f"forwarding to {receiver}")
    for receiver in PUSH_RECEIVERS:
        check_row("forward", receiver, FORWARD_EXPECTED, matrix["stored"], matrix["forward"][receiver].files())


def getscu_files(matrix, tmp_path, option: str) -> dict[str, bytes]:
    out = tmp_path / "get"
    out.mkdir()
    done = subprocess.run(["getscu", "-S", option, "+B", "-aet", SCU_AE, "-aec", "PACSBOX", "-od", str(out),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={matrix['study']}",
                           "127.0.0.1", str(matrix["box"].dicom_port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f.read_bytes() for f in out.iterdir()}


def pynet_get_files(matrix, syntax_lists: list[list[str]]) -> dict[str, bytes]:
    """A pynetdicom C-GET proposing, for each storage SOP class, one context per list in ``syntax_lists``."""
    received: dict[str, bytes] = {}
    lock = threading.Lock()
    sop_classes = sorted({pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPClassUID
                          for _uid, raw in matrix["stored"].values()})
    ae = AE(SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sop_classes:
        for syntaxes in syntax_lists:
            ae.add_requested_context(sop_class, syntaxes)
    roles = [build_role(c, scp_role=True) for c in sop_classes]

    def on_store(event):
        buf = io.BytesIO()
        meta = event.file_meta
        meta.TransferSyntaxUID = event.context.transfer_syntax
        buf.write(b"\0" * 128 + b"DICM")
        from pydicom.filewriter import write_file_meta_info

        write_file_meta_info(buf, meta)
        buf.write(event.request.DataSet.getvalue())
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] = buf.getvalue()
        return 0x0000

    assoc = ae.associate("127.0.0.1", matrix["box"].dicom_port, ae_title="PACSBOX", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = matrix["study"]
    try:
        final = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))[-1][0]
    finally:
        assoc.release()
    assert final.Status == 0x0000, f"C-GET: 0x{final.Status:04X}"
    return received


@pytest.mark.parametrize("receiver", GET_RECEIVERS)
def test_c_get(matrix, tmp_path, receiver):
    if receiver == "accept-all":
        got = pynet_get_files(matrix, [[ts] for _s, ts in STORED.values()])
    elif receiver in ("explicit-le-only", "implicit-only"):
        got = pynet_get_files(matrix, [[ELE if receiver == "explicit-le-only" else ILE]])
    else:
        option = "+xb" if receiver == "big-endian-preferring" else receiver.split()[-1]
        got = getscu_files(matrix, tmp_path, option)
    check_row("C-GET", receiver, GET_EXPECTED, matrix["stored"], got)


def test_never_a_syntax_the_box_cannot_produce(matrix):
    """A requestor that takes only JPEG-LS gets its JPEG-LS object and a failed sub-operation for the rest."""
    ae = AE(SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    sop_classes = sorted({pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPClassUID
                          for _uid, raw in matrix["stored"].values()})
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, [JPEGLSLossless])
    received = []
    assoc = ae.associate("127.0.0.1", matrix["box"].dicom_port, ae_title="PACSBOX",
                         ext_neg=[build_role(c, scp_role=True) for c in sop_classes],
                         evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(
                             str(e.request.AffectedSOPInstanceUID)) or 0x0000)])
    assert assoc.is_established
    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = matrix["study"]
    try:
        final = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))[-1][0]
    finally:
        assoc.release()
    assert received == [matrix["stored"]["jpeg-ls"][0]]
    assert final.Status == 0xB000  # sub-operations complete, one or more failed
    assert final.NumberOfFailedSuboperations == len(STORED) - 1
