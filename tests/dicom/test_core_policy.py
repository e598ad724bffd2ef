"""Association policy: the called AE title must be ours, and only allowed callers (and hosts) get in."""
from __future__ import annotations

import pytest

from helpers import Server, dcmtk, init_data_dir


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    data = init_data_dir(tmp_path_factory.mktemp("policy") / "data")
    srv = Server(data, env={"PACS_DICOM_ALLOWED_CALLERS": "GOODSCU, HOSTSCU@127.0.0.1, FARSCU@10.99.99.99"}).start()
    yield srv
    srv.kill()


def echo(srv, calling: str, called: str = "PACSBOX"):
    return dcmtk("echoscu", "-v", "-aet", calling, "-aec", called, "127.0.0.1", srv.dicom_port, timeout=30)


@pytest.mark.parametrize("calling", ["GOODSCU", "HOSTSCU"])
def test_allowed_callers_get_in(guarded, calling):
    done = echo(guarded, calling)
    assert done.returncode == 0, done.stderr
    assert "Received Echo Response (Success)" in done.stderr


@pytest.mark.parametrize("calling", ["BADSCU", "FARSCU", "goodscu"])
def test_other_callers_are_rejected(guarded, calling):
    """Not listed, listed for another host, or listed in another case: rejected, with the reason."""
    done = echo(guarded, calling)
    assert done.returncode != 0
    assert "Association Rejected" in done.stderr, done.stderr
    assert "Calling AE Title Not Recognized" in done.stderr, done.stderr
    assert f"association from {calling} at 127.0.0.1 to PACSBOX rejected" in guarded.log()


def test_wrong_called_ae_title_is_rejected(guarded):
    done = echo(guarded, "GOODSCU", called="NOTPACS")
    assert done.returncode != 0
    assert "Called AE Title Not Recognized" in done.stderr, done.stderr


def test_server_still_serves_after_rejections(guarded):
    echo(guarded, "BADSCU")
    assert echo(guarded, "GOODSCU").returncode == 0


def test_any_caller_is_allowed_by_default(shared_server):
    done = echo(shared_server, "WHOEVER")
    assert done.returncode == 0, done.stderr
    assert echo(shared_server, "WHOEVER", called="NOTPACS").returncode != 0


def test_max_associations_and_idle_timeout(tmp_path):
    """Over the limit a caller is rejected (transient: try later); an idle association is closed."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from helpers import wait_until

    data = init_data_dir(tmp_path / "data")
    srv = Server(data, env={"PACS_DICOM_MAX_ASSOCIATIONS": "1", "PACS_DICOM_NETWORK_TIMEOUT": "2"}).start()
    try:
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", srv.dicom_port, ae_title="PACSBOX")
        assert held.is_established
        done = echo(srv, "SECOND")
        assert done.returncode != 0 and "Association Rejected" in done.stderr, done.stderr
        assert "Transient" in done.stderr, done.stderr
        wait_until(lambda: not held.is_established, 10, what="the idle association to be closed")
        # The slot is free again once the closed association's thread has finished (a moment later).
        wait_until(lambda: echo(srv, "SECOND").returncode == 0, 10, what="the association slot to be free")
    finally:
        srv.kill()
