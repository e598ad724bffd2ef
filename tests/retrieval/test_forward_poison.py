"""One object the peer cannot take never blocks forwarding: it fails with its reason, the good ones go on.

In-process appliance (one forwarding round is ``run_once``), a real pynetdicom peer that takes
CT and MR in explicit VR little endian only and refuses one chosen instance with 0xA700.
"""
from __future__ import annotations

import io

import pydicom
import pytest
import synth
from helpers import free_port, run_cli
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage

from appliance.ingest import Origin


def part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class Peer:
    def __init__(self, refuse: set[str]):
        self.refuse, self.received, self.port = refuse, [], free_port()
        self.ae = AE("READPACS")
        for sop_class in (CTImageStorage, MRImageStorage):
            self.ae.add_supported_context(sop_class, [ExplicitVRLittleEndian])

    def on_store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.refuse:
            return 0xA700
        self.received.append(uid)
        return 0x0000

    def __enter__(self):
        # appliance.dicom.node turns on unrestricted storage for this process: this peer must not accept SC
        self.unrestricted, _config.UNRESTRICTED_STORAGE_SERVICE = _config.UNRESTRICTED_STORAGE_SERVICE, False
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        _config.UNRESTRICTED_STORAGE_SERVICE = self.unrestricted


def corrupt_jpeg_ls():
    ds = synth.make_instance("MR_JPEG_LS", patient_id="POISON")
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 64])  # a JPEG-LS frame that does not decode
    return ds


@pytest.fixture
def app(data_dir):
    from appliance.app import build
    from appliance.config import load

    env = {"PACS_FORWARD_RULES": "READPACS", "PACS_FORWARD_RETRY_INITIAL_SECONDS": "0",
           "PACS_FORWARD_RETRY_MAX_SECONDS": "0"}
    app = build(load(data_dir, env=env), with_web=False)
    app.index.start()
    yield app
    app.index.close()


def test_poison_objects_between_good_ones(app, data_dir):
    good = [synth.make_instance("CT", patient_id="GOOD"), synth.make_instance("MR_BIG_ENDIAN", patient_id="GOOD"),
            synth.make_instance("CT", patient_id="GOOD"), synth.make_instance("CT", patient_id="GOOD")]
    refused = synth.make_instance("CT", patient_id="POISON")
    unsupported = synth.make_instance("SC_JPEG", patient_id="POISON")  # the peer takes no SC at all
    undecodable = corrupt_jpeg_ls()  # the peer wants little endian: it would have to be decoded
    queue = [good[0], unsupported, good[1], refused, good[2], undecodable, good[3]]
    with Peer(refuse={refused.SOPInstanceUID}) as peer:
        app.peers.add("READPACS", "127.0.0.1", peer.port)
        for ds in queue:
            app.ingestor.store_bytes(part10(ds), Origin("dicom", "US1@127.0.0.1"))
        assert app.forwarder.run_once() == len(good)
        assert sorted(peer.received) == sorted(ds.SOPInstanceUID for ds in good)
        # failed for good, with the reason, and not tried again
        assert app.forwarder.run_once() == 0
        failed = {job["sop_uid"]: job for job in app.forwarder.failed()}
        assert set(failed) == {refused.SOPInstanceUID, unsupported.SOPInstanceUID, undecodable.SOPInstanceUID}
        assert all(job["attempts"] == 1 for job in failed.values())
        assert "0xA700" in failed[refused.SOPInstanceUID]["last_error"]
        assert "no presentation context" in failed[unsupported.SOPInstanceUID]["last_error"]
        assert "decompress" in failed[undecodable.SOPInstanceUID]["last_error"]
        [row] = app.forwarder.status()
        assert (row["sent"], row["failed"], row["pending"]) == (4, 3, 0)
        assert row["last_error"]
    app.index.close()

    shown = run_cli("forward", "status", "--data", data_dir).stdout
    assert "Failed jobs" in shown and "0xA700" in shown and refused.SOPInstanceUID in shown
    job_id = failed[refused.SOPInstanceUID]["id"]
    assert "1 job(s) dropped" in run_cli("forward", "drop", job_id, "--data", data_dir).stdout
    assert "2 job(s) dropped" in run_cli("forward", "drop", "--failed", "--data", data_dir).stdout
    assert run_cli("forward", "drop", job_id, "--data", data_dir, check=False).returncode != 0
    shown = run_cli("forward", "status", "--data", data_dir).stdout
    assert "Failed jobs" not in shown
