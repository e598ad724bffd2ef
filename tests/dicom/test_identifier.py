"""The C-FIND fast path (appliance/dicom/identifier.py, pending.py) against pydicom and pynetdicom.

1. ``IdentifierEncoder`` output is byte-for-byte what pydicom writes for the Dataset
   ``response_for`` builds (the path it replaces), for every VR it handles, in Implicit
   and Explicit VR Little Endian: empty, odd and even lengths, multiple values,
   integers, non-ASCII text (ISO_IR 192), person names with ideographic groups.
2. ``PendingSender`` puts the same PDVs on the wire as pynetdicom's send path
   (``C_FIND_RSP.primitive_to_message`` + ``encode_msg``), at several maximum PDU sizes,
   in fewer PDUs none of which exceeds the peer's maximum.
3. A real pynetdicom association in-process, stock and tuned by sockets.py (where
   ``PendingSender`` writes whole PDUs itself): a C-FIND answered through the fast path
   gives the same responses as one answered through pynetdicom's own path, under each
   transfer syntax (big endian and deflate take pynetdicom's path by design), and
   hundreds of matches with one pydicom-only value among them arrive in order.
"""
from __future__ import annotations

import queue
import threading
import time
from io import BytesIO
from types import SimpleNamespace

import pytest
from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from appliance.dicom import find as find_module
from appliance.dicom.find import STUDY_ROOT_FIND, handle_find, response_for
from appliance.dicom.identifier import VRS, IdentifierEncoder, Unencodable, key_text
from appliance.dicom.pending import MAX_QUEUED_PDUS, PendingSender, encode_pdu, pending_command_set
from appliance.dicom.sockets import TunedAssociationSocket, tune_accepted_socket
from helpers import free_port

AE_TITLE = "PACSBOX"


def keyword_for_vr(vr: str, multi: bool = False) -> str:
    """A current (not retired) dictionary keyword of exactly this VR, with VM 1 or (multi) 1-n."""
    for tag, (entry_vr, vm, _name, retired, keyword) in sorted(DicomDictionary.items()):
        if entry_vr == vr and not retired and keyword and tag > 0x00080005 and tag & 0xFFFF \
                and vm == ("1-n" if multi else "1"):
            return keyword
    raise LookupError(vr)


TEXT_VALUES = ["", "A", "AB", "ABC", "Müller", "山田太郎", "Straße 7"]
VALUES = {
    "AE": ["", "PACSBOX", "STORE1"],
    "AS": ["", "045Y", "003M"],
    "CS": ["", "CT", "ORIGINAL", "DERIVED", "ISO_IR 192"],
    "DA": ["", "20240315"],
    "DS": ["", "1.5", "12", "-0.25"],
    "DT": ["", "20240315101500.1", "2024031510"],
    "IS": ["", 0, 7, 12, 123, "42"],
    "TM": ["", "101500", "1015", "101500.12"],
    "UI": ["", "1.2.3", "1.2.34", "1.2.840.10008.5.1.4.1.1.2"],
    "UR": ["", "http://x/y", "http://x/yz"],
    "SH": TEXT_VALUES, "LO": TEXT_VALUES, "ST": TEXT_VALUES, "LT": TEXT_VALUES, "UC": TEXT_VALUES,
    "UT": TEXT_VALUES,
    "PN": ["", "Doe^John", "Doe^Jo", "Müller^Jürgen", "Yamada^Tarou=山田^太郎=やまだ^たろう", "A^B^C^D^E"],
    "US": [0, 512, 65535], "UL": [0, 70000], "SS": [-5, 300], "SL": [-70000, 1],
}
MULTI_VALUES = {"CS": [["CT", "MR"], ["A", "BC", "DEF"]], "UI": [["1.2.3", "1.2.34"]], "PN": [["A^B", "Müller^C"]],
                "LO": [["ONE", "Zwei", "drei"]], "IS": [[1, 22, 333]], "SH": [["X", "Ä"]], "DA": [["20240101", "20241231"]]}


def reference(keywords: list[str], record: dict, explicit: bool) -> bytes:
    """What the pydicom path produces: response_for's Dataset, encoded by pynetdicom's encode()."""
    identifier = Dataset()
    for keyword in keywords:
        identifier.add_new(tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword)), None)
    return encode(response_for(identifier, record, AE_TITLE), not explicit, True)


def cases():
    for vr in sorted(VRS):
        for value in VALUES[vr]:
            yield vr, keyword_for_vr(vr), value
        for value in MULTI_VALUES.get(vr, []):
            yield vr, keyword_for_vr(vr, multi=True), value


@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
@pytest.mark.parametrize("vr,keyword,value", list(cases()))
def test_encoder_matches_pydicom_for_every_vr(vr, keyword, value, explicit):
    keywords = ["QueryRetrieveLevel", keyword, "RetrieveAETitle"]
    record = {"QueryRetrieveLevel": "STUDY", keyword: value, "RetrieveAETitle": AE_TITLE}
    encoder = IdentifierEncoder.for_keys(keywords, explicit_vr=explicit)
    assert encoder is not None
    assert encoder.encode(record) == reference(keywords, record, explicit)


@pytest.mark.filterwarnings("ignore:A value of type 'str' cannot be assigned")  # response_for's "" for Rows
@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
def test_study_level_response_matches_pydicom(explicit):
    """The bench's study-level keys, a non-ASCII name anywhere in the response, missing and None values."""
    keywords = ["PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
                "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries", "StudyDescription",
                "SpecificCharacterSet", "QueryRetrieveLevel", "PatientComments", "StudyTime", "RetrieveAETitle",
                "InstanceAvailability", "Rows"]
    for name in ["KABE^TARO", "Kåbe^Tårö", "上野^一"]:
        record = {"PatientName": name, "PatientID": "PID000123", "StudyInstanceUID": "2.25.99.1.532",
                  "StudyDate": "20240315", "AccessionNumber": "", "ModalitiesInStudy": ["CT", "SR"],
                  "NumberOfStudyRelatedInstances": 10, "NumberOfStudyRelatedSeries": 2, "StudyDescription": None,
                  "StudyTime": "0815", "QueryRetrieveLevel": "STUDY", "RetrieveAETitle": AE_TITLE}
        encoder = IdentifierEncoder.for_keys(keywords, explicit_vr=explicit)
        assert encoder.encode(record) == reference(keywords, record, explicit)


def test_request_key_values_as_the_query_engine_takes_them():
    """key_text, shared by C-FIND, C-MOVE/C-GET and the worklist: only real multi-values are joined."""
    ds = Dataset()
    ds.PatientName = "Doe^Jane"  # a PersonName iterates over its characters: not to be joined
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.PatientID = None
    assert key_text(ds["PatientName"].value) == "Doe^Jane"
    assert key_text(ds["ModalitiesInStudy"].value) == "CT\\MR"
    assert key_text(ds["PatientID"].value) == ""
    assert key_text(("1.2", "1.3")) == "1.2\\1.3" and key_text(" 1.2 ") == " 1.2 "


def test_encoder_refuses_what_it_does_not_handle():
    assert IdentifierEncoder.for_keys(["ProcedureCodeSequence"], explicit_vr=True) is None  # SQ
    assert IdentifierEncoder.for_keys(["SmallestImagePixelValue"], explicit_vr=True) is None  # "US or SS"
    assert IdentifierEncoder.for_keys(["PixelData"], explicit_vr=True) is None
    assert IdentifierEncoder.for_keys(["NoSuchKeyword"], explicit_vr=True) is None
    encoder = IdentifierEncoder.for_keys(["Modality", "Rows"], explicit_vr=False)
    with pytest.raises(Unencodable):  # pydicom writes CS as Latin-1 whatever the character set: leave it to pydicom
        encoder.encode({"Modality": "Ä"})
    with pytest.raises(Unencodable):
        encoder.encode({"Rows": 70000})


class FakeDul:
    def __init__(self):
        self.sent = []

    def send_pdu(self, primitive):
        self.sent.append(primitive)


def request(message_id: int = 7) -> C_FIND:
    req = C_FIND()
    req.MessageID = message_id
    req.AffectedSOPClassUID = STUDY_ROOT_FIND
    return req


@pytest.mark.parametrize("max_pdu", [0, 16384, 4096, 64, 20])
def test_pending_sender_puts_the_same_pdvs_on_the_wire_as_pynetdicom(max_pdu):
    identifier = IdentifierEncoder.for_keys(["PatientName", "StudyInstanceUID", "QueryRetrieveLevel"],
                                            explicit_vr=True).encode(
        {"PatientName": "Doe^John" * 20, "StudyInstanceUID": "1.2.3", "QueryRetrieveLevel": "STUDY"})
    dul = FakeDul()
    sender = PendingSender(dul, 3, pending_command_set(request()), max_pdu, explicit_vr=True)
    sender.send(identifier)
    # pynetdicom: service_class._c_find_scp builds this primitive; dimse.send_msg converts and splits it
    rsp = C_FIND()
    rsp.MessageID = 7
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = STUDY_ROOT_FIND
    rsp.Status = 0xFF00
    rsp.Identifier = BytesIO(identifier)
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    expected = [pdv for p in message.encode_msg(3, max_pdu) for pdv in p.presentation_data_value_list]
    assert [pdv for p in dul.sent for pdv in p.presentation_data_value_list] == expected
    # Fewer PDUs (command and identifier share one when they fit), none longer than the peer takes.
    for primitive in dul.sent:
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        assert max_pdu == 0 or len(pdu.encode()) - 6 <= max_pdu  # PDU header: type, reserved, length
    if max_pdu in (0, 16384, 4096):
        assert len(dul.sent) == 1
    if max_pdu == 20:
        assert len(expected) > 4  # the command set and the identifier were both fragmented


@pytest.mark.parametrize("max_pdu", [0, 16384, 4096, 200, 64, 20])
def test_direct_pending_sender_writes_the_pdus_pynetdicom_would(max_pdu):
    """The direct way (whole PDUs written by the association thread) puts the same bytes on the wire as
    the queued way's P-DATA primitives encoded by pynetdicom, for short and long identifiers alike."""
    encoder = IdentifierEncoder.for_keys(["PatientName", "StudyInstanceUID", "QueryRetrieveLevel"], explicit_vr=True)
    identifiers = [encoder.encode({"PatientName": "Doe^John" * n, "StudyInstanceUID": "1.2.3",
                                   "QueryRetrieveLevel": "STUDY"}) for n in (0, 1, 7, 20, 60)]
    queued, written = FakeDul(), []
    sender = PendingSender(queued, 3, pending_command_set(request()), max_pdu, explicit_vr=True)
    direct = PendingSender(FakeDul(), 3, pending_command_set(request()), max_pdu, explicit_vr=True,
                           direct=lambda data: written.append(data) or True)
    for identifier in identifiers * 50:
        sender.send(identifier)
        assert direct.send(identifier)
    assert direct.flush()
    expected = b"".join(P_DATA_TF(primitive).encode() for primitive in queued.sent)
    assert b"".join(written) == expected
    assert len(written) > 1 or max_pdu in (20, 64)  # several writes of DIRECT_FLUSH_BYTES, not one per PDU
    assert encode_pdu(3, [b"\x03abc"]) == P_DATA_TF(_primitive(3, [b"\x03abc"])).encode()


def _primitive(context_id, pdvs):
    from pynetdicom.pdu_primitives import P_DATA

    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, pdv] for pdv in pdvs]
    return primitive


def test_pending_sender_waits_while_the_dul_queue_is_full():
    dul = FakeDul()
    dul.to_provider_queue = queue.Queue()
    for _ in range(MAX_QUEUED_PDUS):
        dul.to_provider_queue.put(None)
    established = [True]
    sender = PendingSender(dul, 1, pending_command_set(request()), 16384, True, lambda: established[0])
    started = time.monotonic()  # before the timer starts: it never fires early, so 0.1 s is a lower bound
    threading.Timer(0.1, lambda: dul.to_provider_queue.get()).start()
    sender.send(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    assert time.monotonic() - started >= 0.09 and len(dul.sent) == 1  # sent once the DUL took one
    for _ in range(2):
        dul.to_provider_queue.put(None)
    established[0] = False  # an aborted association: no waiting (pynetdicom stops the handler next)
    started = time.monotonic()
    sender.send(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    assert time.monotonic() - started < 0.05


def fake_event(transfer_syntax: str, dimse_sent_handlers=()):
    assoc = SimpleNamespace(dul=FakeDul(), dimse=SimpleNamespace(maximum_pdu_size=16384),
                            get_handlers=lambda event: list(dimse_sent_handlers) if event == evt.EVT_DIMSE_SENT else [])
    return SimpleNamespace(assoc=assoc, request=request(),
                           context=SimpleNamespace(context_id=1, transfer_syntax=transfer_syntax))


def test_pending_sender_only_where_nothing_needs_the_stock_path():
    assert PendingSender.for_event(fake_event(ImplicitVRLittleEndian)) is not None
    assert PendingSender.for_event(fake_event(ExplicitVRLittleEndian)).explicit_vr
    assert PendingSender.for_event(fake_event(ExplicitVRBigEndian)) is None
    assert PendingSender.for_event(fake_event(DeflatedExplicitVRLittleEndian)) is None
    assert PendingSender.for_event(fake_event(ImplicitVRLittleEndian, [(print, None)])) is None
    # The node's association log tallies C-STOREs only: it must not send every C-FIND match the slow way.
    from appliance.dicom.association_log import AssociationLog

    tally = [(handler, None) for event, handler in AssociationLog().handlers() if event == evt.EVT_DIMSE_SENT]
    assert tally and PendingSender.for_event(fake_event(ImplicitVRLittleEndian, tally)) is not None
    assert PendingSender.for_event(fake_event(ImplicitVRLittleEndian, tally + [(print, None)])) is None


# -- a real association, in-process ------------------------------------------------------------

RECORDS = [{"QueryRetrieveLevel": "STUDY", "PatientName": name, "PatientID": f"P{i}", "StudyDate": "20240315",
            "StudyInstanceUID": f"2.25.{i}", "ModalitiesInStudy": ["CT", "MR"][: 1 + i % 2],
            "NumberOfStudyRelatedInstances": 10 * i, "StudyDescription": "Thorax" * i}
           for i, name in enumerate(["Doe^John", "Müller^Jürgen", "Yamada^Tarou=山田^太郎", "", "O'Neil^Pat"])]
RECORDS[3]["Modality"] = "Ä"  # a value only pydicom writes (CS is Latin-1): that response takes pynetdicom's path


class StubIndex:
    records = RECORDS

    def iter_search(self, level, criteria):
        return (dict(r) for r in self.records)


@pytest.fixture(scope="module", params=["stock socket", "tuned socket"])
def scp(request):
    # As the appliance runs unless its log level is DEBUG (node.py): pynetdicom's standard handlers, which
    # log every DIMSE message and so need its per-message path, are not bound.
    level, _config.LOG_HANDLER_LEVEL = _config.LOG_HANDLER_LEVEL, "none"
    ae = AE(ae_title=AE_TITLE)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind,
                             [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                              DeflatedExplicitVRLittleEndian])
    port = free_port()
    handlers = [(evt.EVT_C_FIND, handle_find, [StubIndex(), AE_TITLE])]
    if request.param == "tuned socket":  # as the appliance's node: PendingSender writes whole PDUs itself
        handlers.append((evt.EVT_CONN_OPEN, tune_accepted_socket))
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield port
    server.shutdown()
    _config.LOG_HANDLER_LEVEL = level


def query(port: int, syntax: str) -> list[tuple[int, Dataset | None]]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    for keyword in ["PatientName", "PatientID", "StudyDate", "StudyInstanceUID", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances", "StudyDescription", "Modality", "RetrieveAETitle"]:
        setattr(ident, keyword, "")
    try:
        return [(status.Status, ds) for status, ds in assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind)]
    finally:
        assoc.release()


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian])
def test_fast_path_answers_like_pynetdicom_over_a_real_association(scp, syntax, monkeypatch):
    sent = []
    real_send = PendingSender.send
    monkeypatch.setattr(PendingSender, "send", lambda self, data: (sent.append(data), real_send(self, data)))
    fast = query(scp, syntax)
    monkeypatch.setattr(find_module.PendingSender, "for_event", classmethod(lambda cls, event: None))
    stock = query(scp, syntax)
    assert [s for s, _ in fast] == [0xFF00] * len(RECORDS) + [0x0000]
    assert [(s, ds) for s, ds in fast] == [(s, ds) for s, ds in stock]
    assert [str(ds.PatientName) for _, ds in fast[:-1]] == [r["PatientName"] for r in RECORDS]
    little_endian = syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    assert len(sent) == (len(RECORDS) - 1 if little_endian else 0)


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_many_matches_stream_in_order_with_a_pydicom_one_among_them(scp, monkeypatch, request):
    """More matches than one direct write holds, one of them through pynetdicom's path mid-stream: every
    response arrives, in order, exactly as pynetdicom alone answers."""
    many = [dict(RECORDS[0], PatientID=f"P{i:04d}", StudyDescription="Chest " * (i % 10)) for i in range(700)]
    many[350] = dict(many[350], Modality="Ä")
    monkeypatch.setattr(StubIndex, "records", many)
    writes = []
    real_direct = TunedAssociationSocket.send_direct
    monkeypatch.setattr(TunedAssociationSocket, "send_direct",
                        lambda self, data: writes.append(len(data)) or real_direct(self, data))
    fast = query(scp, ExplicitVRLittleEndian)
    if request.node.callspec.params["scp"] == "tuned socket":
        assert 2 < len(writes) < 50  # a few large writes, not one per match
    else:
        assert not writes
    monkeypatch.setattr(find_module.PendingSender, "for_event", classmethod(lambda cls, event: None))
    stock = query(scp, ExplicitVRLittleEndian)
    assert [s for s, _ in fast] == [0xFF00] * len(many) + [0x0000]
    assert [ds.PatientID for _, ds in fast[:-1]] == [r["PatientID"] for r in many]
    assert fast == stock
