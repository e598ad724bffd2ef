"""The Part 10 header put before a received C-STORE data set is the one pynetdicom would build."""
from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from appliance.dicom.store import part10_header


@pytest.mark.parametrize("sop_class, sop_uid, syntax", [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", ExplicitVRLittleEndian),  # even, even, odd lengths
    ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.3.45", ImplicitVRLittleEndian),
    ("1.2.840.10008.5.1.4.1.1.6.1", "2.25." + "9" * 59, JPEGBaseline8Bit),  # a 64-character UID
])
def test_header_matches_pynetdicoms_file_meta(sop_class, sop_uid, syntax):
    meta = create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_uid, transfer_syntax=syntax)
    assert part10_header(sop_class, sop_uid, syntax) == b"\0" * 128 + b"DICM" + encode_file_meta(meta)
