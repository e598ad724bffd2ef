"""Standard UIDs taken as valid without a regular expression, for association negotiation.

A getscu association request proposes ~120 storage SOP classes with the SCP role, each
with its transfer syntaxes: ~2,000 UID objects are made while pynetdicom (3.0) decodes
it, turns it into primitives, negotiates and encodes the answer, and pydicom checks
each against its UID regular expression up to three times (``UID.__new__``'s
``validate_value``, pynetdicom's ``validate_ui``, ``UID.is_valid``): about half of the
~10 ms it took to read getscu's request, a quarter of the server CPU of a 100-instance
C-GET (bench/README.md, issue 18 session 6).

The UIDs of the standard itself (pydicom's UID dictionary: SOP classes, transfer
syntaxes) are valid by definition; for exactly those strings the three checks answer
at once. Every other value (instance UIDs, private UIDs, anything malformed) goes
through the original checks unchanged, with their errors and warnings.
"""
from __future__ import annotations

import pydicom.uid
from pydicom._uid_dict import UID_dictionary
from pynetdicom import _config

STANDARD = frozenset(UID_dictionary)


def install() -> bool:
    """Idempotent; False (and nothing changed) when pydicom/pynetdicom lack what this was written against."""
    validate_value = getattr(pydicom.uid, "validate_value", None)
    is_valid = getattr(pydicom.uid.UID, "is_valid", None)
    validate_ui = getattr(_config, "VALIDATORS", {}).get("UI")
    if getattr(validate_value, "standard_uids", False):
        return True
    if not callable(validate_value) or not isinstance(is_valid, property) or not callable(validate_ui):
        return False

    def standard_validate_value(vr, value, validation_mode, validator=None):
        if vr == "UI" and isinstance(value, str) and value in STANDARD:
            return None
        return validate_value(vr, value, validation_mode, validator)

    def standard_validate_ui(value):
        return (True, "") if isinstance(value, str) and value in STANDARD else validate_ui(value)

    def standard_is_valid(uid) -> bool:
        return uid in STANDARD or is_valid.fget(uid)

    standard_validate_value.standard_uids = True
    pydicom.uid.validate_value = standard_validate_value  # the name UID.__new__ looks up in its module
    _config.VALIDATORS["UI"] = standard_validate_ui  # pynetdicom's documented table of validators
    pydicom.uid.UID.is_valid = property(standard_is_valid, doc=is_valid.__doc__)
    return True
