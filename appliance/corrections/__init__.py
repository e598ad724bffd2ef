"""Fixing mistakes without a vendor engineer: correct, move, merge, split (edit.py); delete into a
recycle bin and restore (delete.py); anonymized copies (anonymize.py)."""
from .anonymize import AnonymizedCopies
from .delete import RecycleBin
from .edit import CorrectionError, CorrectionResult, Corrections, validate

__all__ = ["AnonymizedCopies", "RecycleBin", "CorrectionError", "CorrectionResult", "Corrections", "validate"]


def corrections_of(parts) -> Corrections:
    """The corrections of a running Appliance or of a CLI command's Parts (both have these parts)."""
    return Corrections(parts.index, parts.archive, parts.ingestor, parts.audit)


__all__.append("corrections_of")


def recycle_bin_of(parts) -> RecycleBin:
    return RecycleBin(parts.index, parts.archive, parts.audit, parts.config.storage.recycle_bin_days)


__all__.append("recycle_bin_of")


def anonymized_copies_of(parts) -> AnonymizedCopies:
    return AnonymizedCopies(parts.index, parts.archive, parts.audit)


__all__.append("anonymized_copies_of")
