"""Storage commitment reports are owed durably: stored before the N-ACTION is answered, retried with back-off
until the requester takes them, across a restart of the box and while the requester is down."""
from __future__ import annotations

import threading

import indexkit
import readback
from helpers import free_port, wait_until
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification
from retrieval_support import cli, start_box
from test_workflow import check_report, commitment_request, stored_and_missing

REQUESTER = "COMMITDUR"
FAST = {"PACS_DICOM_COMMITMENT_RETRY_INITIAL_SECONDS": "1", "PACS_DICOM_COMMITMENT_RETRY_MAX_SECONDS": "1"}


def requests(box) -> list[tuple[str, str, int]]:
    with readback.opened(box.data_dir) as (_archive, index):
        return [(r.transaction_uid, r.state, r.attempts) for r in indexkit.rows(index, "CommitmentRequest")]


def test_report_survives_a_restart_of_the_box_and_of_the_requester(tmp_path):
    port = free_port()
    box = start_box(tmp_path / "box", env=FAST, peers=((REQUESTER, port),))
    listener = None
    try:
        stored, missing = stored_and_missing(box, tmp_path)
        ae = AE(ae_title=REQUESTER)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX")
        assert assoc.is_established
        transaction_uid, request = commitment_request(stored + [missing])
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assert status.Status == 0x0000
        assoc.release()  # and the requester is not listening: the report cannot be delivered yet
        wait_until(lambda: any(t == transaction_uid and s == "pending" and n >= 2 for t, s, n in requests(box)),
                   20, 0.2, what="failed report attempts, retried")
        status_text = cli(box.data_dir, "modality", "list").stdout  # the box stays usable meanwhile
        assert REQUESTER in status_text

        box.stop()  # the owed report is in the index
        box.start()
        report: dict = {}
        got = threading.Event()

        def on_report(event):
            report["event_type"] = event.event_type
            report["dataset"] = event.event_information
            got.set()
            return 0x0000, None

        listener = AE(ae_title=REQUESTER)  # the requester is back
        listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        listener.add_supported_context(Verification)
        server = listener.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        try:
            assert got.wait(20), "the owed report never came after the restarts"
            check_report(report, transaction_uid, stored, missing)
            wait_until(lambda: [(t, s) for t, s, _ in requests(box)] == [(transaction_uid, "delivered")], 10, 0.2,
                       what="the request marked delivered")
        finally:
            server.shutdown()
    finally:
        box.kill()
