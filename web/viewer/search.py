"""Turning the study list's form into query-engine criteria."""
from __future__ import annotations

import datetime
from dataclasses import dataclass

PAGE_SIZE = 50
DATE_PRESETS = ("any", "today", "7d", "30d", "custom")
MODALITIES = ("", "CR", "DX", "US", "CT", "MR", "MG", "XA", "NM", "OT")


@dataclass
class StudySearch:
    name: str = ""
    patient_id: str = ""
    accession: str = ""
    modality: str = ""
    dates: str = "any"
    date_from: str = ""  # YYYY-MM-DD from an <input type=date>
    date_to: str = ""
    page: int = 1

    @classmethod
    def from_args(cls, args) -> "StudySearch":
        def clean(key: str, limit: int = 64) -> str:
            # '*' and '?' are the engine's wildcards; a person typing them means "anything".
            return (args.get(key) or "").strip()[:limit]

        try:
            page = max(1, int(args.get("page", 1)))
        except ValueError:
            page = 1
        dates = args.get("dates", "any")
        if dates == "any" and (args.get("from") or args.get("to")):
            dates = "custom"  # typing a date means a custom range, without touching the menu
        return cls(clean("name"), clean("patient_id"), clean("accession"), clean("modality", 8).upper(),
                   dates if dates in DATE_PRESETS else "any", clean("from", 10), clean("to", 10), page)

    def criteria(self, today: datetime.date | None = None) -> dict[str, str]:
        today = today or datetime.date.today()
        c: dict[str, str] = {}
        if self.name:
            # Searched with the engine's fuzzy name matching (the index's names.py): every word, in any
            # order, with or without commas or carets, without regard to case or accents; "smi" finds
            # "SMITH^JOHN" and "Goldsmith^Ann", "Moore, Sara" and "sara moore" find "MOORE^SARA".
            c["PatientName"] = self.name
        if self.patient_id:
            c["PatientID"] = f"{self.patient_id}*"  # without regard to case (see views.studies)
        if self.accession:
            c["AccessionNumber"] = f"{self.accession}*"
        if self.modality:
            c["ModalitiesInStudy"] = self.modality
        date_range = self.date_range(today)
        if date_range:
            c["StudyDate"] = date_range
        return c

    def date_range(self, today: datetime.date) -> str:
        fmt = "%Y%m%d"
        if self.dates == "today":
            return today.strftime(fmt)
        if self.dates in ("7d", "30d"):
            days = 6 if self.dates == "7d" else 29
            return f"{(today - datetime.timedelta(days=days)).strftime(fmt)}-{today.strftime(fmt)}"
        if self.dates == "custom":
            lo = self.date_from.replace("-", "")
            hi = self.date_to.replace("-", "")
            if (lo and not (len(lo) == 8 and lo.isdigit())) or (hi and not (len(hi) == 8 and hi.isdigit())):
                return ""
            return f"{lo}-{hi}" if (lo or hi) else ""
        return ""

    def query_args(self, **overrides) -> dict:
        args = {"name": self.name, "patient_id": self.patient_id, "accession": self.accession,
                "modality": self.modality, "dates": self.dates, "from": self.date_from, "to": self.date_to,
                "page": self.page}
        args.update(overrides)
        return {k: v for k, v in args.items() if v not in ("", None, "any")}
