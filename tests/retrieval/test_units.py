"""In-process checks of the pieces: forwarding rules, contexts, transcoding limits, worklist store, registry."""
from __future__ import annotations

import datetime
import io
import os

import pytest
import synth
from appliance.convert.transcode import TranscodeError, for_peer
from appliance.dicom.scu import storage_contexts
from appliance.errors import ConfigError
from appliance.index import Index
from appliance.records.peers import PeerError, PeerRegistry
from appliance.records.worklist import Worklist, WorklistError
from appliance.services.forward import Rule, parse_rules
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless


@pytest.fixture
def index(tmp_path, index_url):
    idx = Index.open(tmp_path / "index.db", os.urandom(32), url=index_url)
    yield idx
    idx.close()


def test_forward_rules():
    rules = parse_rules(["READ", "CT_ONLY modality=ct,MR calling=US1,US2", "  "])
    assert rules == [Rule("READ"), Rule("CT_ONLY", frozenset({"CT", "MR"}), frozenset({"US1", "US2"}))]
    assert rules[0].matches("US", "")
    assert rules[1].matches("CT", "US1") and not rules[1].matches("CT", "X") and not rules[1].matches("US", "US1")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_rules(["READ modality"])
    with pytest.raises(ConfigError):
        parse_rules(["READ station=US1"])


def test_contexts_offer_the_stored_syntax_and_an_uncompressed_fallback():
    cts = storage_contexts([("1.2.840.10008.5.1.4.1.1.6.1", JPEGBaseline8Bit),
                            ("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)])
    offered = sorted((str(c.abstract_syntax), tuple(map(str, c.transfer_syntax))) for c in cts)
    assert offered == sorted([
        ("1.2.840.10008.5.1.4.1.1.6.1", (JPEGBaseline8Bit,)),
        ("1.2.840.10008.5.1.4.1.1.6.1", (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
        ("1.2.840.10008.5.1.4.1.1.2", (ExplicitVRLittleEndian,)),
        ("1.2.840.10008.5.1.4.1.1.2", (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ])


def part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_transcoding_only_decompresses_and_keeps_the_identity():
    ct = synth.make_instance("CT")
    with pytest.raises(TranscodeError):
        for_peer(part10(ct), ExplicitVRLittleEndian, [JPEGLSLossless])
    us = synth.make_instance("US_CINE_JPEG")
    out = for_peer(part10(us), us.file_meta.TransferSyntaxUID, [ImplicitVRLittleEndian])
    assert out.SOPInstanceUID == us.SOPInstanceUID and out.StudyInstanceUID == us.StudyInstanceUID
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # pynetdicom re-encodes to the accepted one
    assert out.LossyImageCompression == "01"


def test_worklist_store_update_and_expiry(index):
    wl = Worklist(index)
    today = datetime.date(2026, 3, 10)
    old = wl.add(patient_name="Old^One", patient_id="P1", modality="us", scheduled_date="2026-03-01")
    new = wl.add(patient_name="New^Two", patient_id="P2", modality="DX", scheduled_date="20260310",
                 scheduled_time="09:30", station_ae="DX1")
    assert new.scheduled_time == "093000" and old.modality == "US" and old.scheduled_date == "20260301"
    assert [i.id for i in wl.list(modality="US")] == [old.id]
    assert [i.id for i in wl.search({"PatientName": "new*"})] == [new.id]
    assert [i.id for i in wl.search({"ScheduledProcedureStepStartDate": "20260305-"})] == [new.id]
    wl.update(new.id, status="completed")
    assert wl.get(new.id).status == "COMPLETED"
    assert wl.search({"PatientID": "P2"}) == []  # finished work is not offered to modalities
    with pytest.raises(WorklistError):
        wl.update(new.id, status="DONE")
    with pytest.raises(WorklistError):
        wl.add(patient_name="X", patient_id="", modality="US", scheduled_date="20260101")
    assert wl.expire(days=2, today=today) == 1
    assert wl.get(old.id) is None and wl.get(new.id) is not None


def test_peer_registry_validation(index):
    peers = PeerRegistry(index)
    peers.add("CR_ROOM1", "10.0.0.5", 104, "x-ray")
    with pytest.raises(PeerError, match="already registered"):
        peers.add("CR_ROOM1", "10.0.0.6", 104)
    with pytest.raises(PeerError, match="not valid"):
        peers.add("A" * 17, "h", 104)
    with pytest.raises(PeerError, match="out of range"):
        peers.add("OK", "h", 70000)
    assert peers.update("CR_ROOM1", port=11112, can_retrieve=False).port == 11112
    assert peers.get("CR_ROOM1").can_retrieve is False
    assert peers.allowed_callers() == ["CR_ROOM1"]
    peers.remove("CR_ROOM1")
    assert peers.list() == []


def test_big_endian_to_a_little_endian_peer_keeps_the_pixels():
    import numpy as np
    import pydicom
    from pynetdicom.dsutils import decode, encode

    be = synth.make_instance("MR_BIG_ENDIAN")
    raw = part10(be)
    out = for_peer(raw, be.file_meta.TransferSyntaxUID, [ImplicitVRLittleEndian])
    # what pynetdicom puts on the wire for an accepted implicit VR little endian context
    back = decode(io.BytesIO(encode(out, True, True, False)), True, True)
    back.file_meta = pydicom.dataset.FileMetaDataset()
    back.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, pydicom.dcmread(io.BytesIO(raw)).pixel_array)


def test_forward_gives_up_after_max_attempts_and_can_be_retried(data_dir):
    """In-process: a peer that refuses connections, max_attempts = 2, no waiting between attempts."""
    from appliance.app import build
    from appliance.config import load
    from appliance.ingest import Origin
    from helpers import free_port

    env = {"PACS_FORWARD_RULES": "DEAD", "PACS_FORWARD_MAX_ATTEMPTS": "2", "PACS_FORWARD_RETRY_INITIAL_SECONDS": "0",
           "PACS_FORWARD_RETRY_MAX_SECONDS": "0"}
    app = build(load(data_dir, env=env), with_web=False)
    try:
        app.peers.add("DEAD", "127.0.0.1", free_port())
        app.ingestor.store_bytes(part10(synth.make_instance("CT", patient_id="FWDUNIT")), Origin("dicom", "US1@x"))
        app.ingestor.store_bytes(part10(synth.make_instance("CT", patient_id="FWDUNIT")), Origin("dicom", "DEAD@x"))
        assert app.forwarder.status()[0]["pending"] == 1  # one job: never back to the AE it came from
        assert app.forwarder.run_once() == 0
        assert app.forwarder.run_once() == 0
        [row] = app.forwarder.status()
        assert (row["pending"], row["failed"], row["sent"]) == (0, 1, 0)
        assert "did not answer" in row["last_error"]
        assert app.forwarder.retry_failed("DEAD") == 1
        assert app.forwarder.status()[0]["pending"] == 1
    finally:
        app.index.close()
