"""Building DIMSE status responses with a reason (PS3.7 C.4: ErrorComment, at most 64 characters)."""
from __future__ import annotations

from pydicom.dataset import Dataset


def status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds
