"""standard_uids.py: the standard's own UIDs skip the regular expressions; every other value is checked as before."""
from __future__ import annotations

import pydicom.config
import pytest
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import _config, build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.transport import AddressInformation
from pynetdicom.pdu_primitives import (A_ASSOCIATE, MaximumLengthNotification,
                                       SCP_SCU_RoleSelectionNegotiation)

from appliance.dicom import standard_uids


@pytest.fixture(autouse=True)
def installed():
    assert standard_uids.install()
    assert standard_uids.install()  # idempotent


def test_standard_uids_are_valid():
    for uid in (CTImageStorage, ExplicitVRLittleEndian, "1.2.840.10008.5.1.4.1.2.2.3"):
        assert UID(uid, validation_mode=pydicom.config.RAISE).is_valid
        assert _config.VALIDATORS["UI"](UID(uid)) == (True, "")


def test_other_values_are_checked_as_before():
    assert UID("1.2.826.0.1.3680043.8.498.1").is_valid
    assert not UID("1.2.3.abc", validation_mode=pydicom.config.IGNORE).is_valid
    with pytest.raises(ValueError):
        UID("1.2.x", validation_mode=pydicom.config.RAISE)
    with pytest.raises(ValueError):
        UID("1." + "2" * 70, validation_mode=pydicom.config.RAISE)
    assert _config.VALIDATORS["UI"](UID("")) == (False, "must not be an empty str")
    assert _config.VALIDATORS["UI"](["not", "a", "uid"]) == (False, "must be pydicom.uid.UID")


def test_association_request_decodes_to_the_same_primitive():
    """A request with role selection decodes and re-encodes to the same bytes as pynetdicom's own."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title, request.called_ae_title = "SCU", "PACSBOX"
    request.calling_presentation_address = AddressInformation.from_addr_port("127.0.0.1", 11112)
    request.called_presentation_address = AddressInformation.from_addr_port("127.0.0.1", 104)
    contexts = [build_context(CTImageStorage), build_context("1.2.826.0.1.3680043.8.498.9", ExplicitVRLittleEndian)]
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    request.presentation_context_definition_list = contexts
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid, role.scu_role, role.scp_role = CTImageStorage, False, True
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    request.user_information = [length, role]
    encoded = A_ASSOCIATE_RQ()
    encoded.from_primitive(request)
    raw = encoded.encode()
    decoded = A_ASSOCIATE_RQ()
    decoded.decode(raw)
    again = A_ASSOCIATE_RQ()
    again.from_primitive(decoded.to_primitive())
    assert again.encode() == raw
    assert [str(cx.abstract_syntax) for cx in decoded.to_primitive().presentation_context_definition_list] == \
        [CTImageStorage, "1.2.826.0.1.3680043.8.498.9"]
