"""DICOM date (DA) and time (TM) values as the index stores and matches them: plain functions, no database.

The query engine (index/query.py) normalises C-FIND/QIDO keys with them and the ingest parser
(ingest/dicomfile.py) the values it indexes; they live outside appliance/index so that an ingest
worker (dicom/workers.py) parses without importing the index (peewee, SQLCipher).
"""
from __future__ import annotations


class QueryError(ValueError):
    """A query value that cannot be matched (bad range, wildcard where none is allowed)."""


def normalize_time(value: str, upper: bool = False) -> str:
    """TM as stored: HHMMSS[.ffffff]; a partial bound is padded to the widest or narrowest time."""
    value = value.replace(":", "").strip()
    if not value:
        return value
    main, _, frac = value.partition(".")
    if not main.isdigit() or len(main) % 2 or len(main) > 6:
        raise QueryError(f"not a DICOM time: {value!r}")
    pad = "9" if upper else "0"
    main = main + pad * (6 - len(main))
    if upper:
        main = min(main[:2], "23") + min(main[2:4], "59") + min(main[4:6], "59")
        return main + "." + (frac + "9" * 6)[:6]
    return main + ("." + frac if frac else "")


def normalize_date(value: str) -> str:
    value = value.replace(".", "").strip()  # ACR-NEMA style YYYY.MM.DD
    if value and (len(value) != 8 or not value.isdigit()):
        raise QueryError(f"not a DICOM date (YYYYMMDD): {value!r}")
    return value
