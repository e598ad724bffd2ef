"""Fixing mistakes without a vendor engineer: correct, move, merge, split (edit.py)."""
from .edit import CorrectionError, CorrectionResult, Corrections, validate

__all__ = ["CorrectionError", "CorrectionResult", "Corrections", "validate"]


def corrections_of(parts) -> Corrections:
    """The corrections of a running Appliance or of a CLI command's Parts (both have these parts)."""
    return Corrections(parts.index, parts.archive, parts.ingestor, parts.audit)


__all__.append("corrections_of")
