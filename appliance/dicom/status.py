"""DIMSE status codes, in one place, and building a status response with a reason.

The codes are the ones PS3.4 and PS3.7 Annex C define; each name says what a peer
reads in it. Handlers answer with a bare code, or with ``status(code, reason)`` when
a person at the modality should learn why (PS3.7 C.4: ErrorComment, at most 64
characters). This module imports nothing heavy at load time: errors.py takes its
codes from here, and every CLI command imports errors.py.
"""
from __future__ import annotations

# General (PS3.7 C.1-C.5)
SUCCESS = 0x0000
CANCELLED = 0xFE00
PENDING = 0xFF00
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_OBJECT = 0x0112
INVALID_ARGUMENT = 0x0115
NO_SUCH_CLASS = 0x0118
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124  # "Refused: Not Authorized"

# Storage (PS3.4 B.2.3), also used for the errors a C-STORE can meet (errors.py)
OUT_OF_RESOURCES = 0xA700
# A different object under a stored SOP Instance UID, refused by policy ([storage] on_conflict = "reject",
# or on_patient_change = "reject" when it names another patient): "Error: Cannot understand" (C000-CFFF)
# codes of our own, not "Refused: Out of Resources" (A7xx). Modalities queue an A7xx for an automatic
# resend later, which would fail the same way for ever; a Cxxx failure is shown to the operator as "not
# accepted", and this needs a person (the patient fixed at the modality, or an admin's decision).
DUPLICATE_REJECTED = 0xC770
REPLACEMENT_REFUSED = 0xC771
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
STORE_OK = frozenset({SUCCESS, COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED, DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING})

# Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
IDENTIFIER_MISMATCH = 0xA900  # "Identifier does not match SOP Class"
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801  # pynetdicom sends it when the handler yields no destination
NOT_PERMITTED = 0xC001  # our own "Unable to process" code for a caller without the retrieve permission


def status(code: int, comment: str = ""):
    """A status Dataset: ``code`` with ``comment`` as its ErrorComment (cut to 64 characters)."""
    from pydicom.dataset import Dataset  # here, not at import: see the module docstring

    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds
