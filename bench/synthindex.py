"""A large synthetic index for the C-FIND benchmark, written straight into the index tables.

Ingesting 100,000 objects through the network would take ten minutes here, so the
rows are bulk-inserted with peewee's ``insert_many`` in big transactions, with the
counts (NumberOfStudyRelated*, ModalitiesInStudy, ...) computed exactly as ingest
keeps them (appliance/index/records.py). The archive stays empty: C-FIND reads
only the index. Shape: ``studies`` studies, two per patient, ``series`` series of
``per_series`` instances each; study dates spread over six years; 200 family names.
"""
from __future__ import annotations

import datetime
import hashlib

from appliance.index.models import Instance, Patient, Series, Study
from appliance.index.transfer import advance_sequence

SYLLABLES = ["KA", "MO", "RI", "TE", "SU", "LA", "NO", "BE", "DI", "VA", "GO", "PE", "XU", "ZI", "FO", "HA",
             "JU", "WE", "YO", "CE"]
FAMILIES = [a + b + "N" for a in SYLLABLES for b in SYLLABLES[:10]]  # 200 synthetic family names
GIVEN = ["ANA", "BEN", "CARA", "DAN", "EVA", "FINN", "GIA", "HUGO", "IDA", "JON", "KAI", "LEA", "MAX"]
MODALITIES = [("CT", "1.2.840.10008.5.1.4.1.1.2"), ("MR", "1.2.840.10008.5.1.4.1.1.4"),
              ("US", "1.2.840.10008.5.1.4.1.1.6.1"), ("CR", "1.2.840.10008.5.1.4.1.1.1"),
              ("DX", "1.2.840.10008.5.1.4.1.1.1.1")]
FIRST_DAY = datetime.date(2020, 1, 1)
DAYS = 6 * 365
ROOT = "2.25.99"  # a UID root for synthetic data only
CHUNK = 400  # rows per INSERT (SQLite's bound-variable limit)


def patient_id(p: int) -> str:
    return f"PID{p:06d}"


def study_date(s: int) -> str:
    return (FIRST_DAY + datetime.timedelta(days=(s * 7919) % DAYS)).strftime("%Y%m%d")


def object_id(instance_id: int) -> str:
    """The archive's id shape: 256 consecutive objects share a 4-digit fan-out prefix (store.FANOUT_BATCH)."""
    prefix = hashlib.md5(f"fanout{instance_id // 256}".encode()).hexdigest()[:4]
    return prefix + hashlib.md5(str(instance_id).encode()).hexdigest()[4:]


def object_plaintext(instance_id: int) -> bytes:
    """The bytes whose SHA-256 the row records (bench/scale_build.py seals them as the object)."""
    return str(instance_id).encode()


def _insert(db, model, rows: list[dict]) -> None:
    for i in range(0, len(rows), CHUNK):
        model.insert_many(rows[i:i + CHUNK]).execute(db)


def build(db, studies: int = 10_000, series: int = 2, per_series: int = 5) -> dict:
    """Fill the (empty, migrated) index ``db``; return the expected counts."""
    now = datetime.datetime(2026, 1, 1)
    n_patients = (studies + 1) // 2
    with db.atomic():
        rows = []
        for p in range(n_patients):
            family, given = FAMILIES[p % len(FAMILIES)], GIVEN[(p // len(FAMILIES)) % len(GIVEN)]
            n_st = min(2, studies - 2 * p)
            rows.append(dict(id=p + 1, patient_key=f"{patient_id(p)}\x1f", patient_id=patient_id(p), issuer="",
                             name=f"{family}^{given}", name_upper=f"{family}^{given}",
                             birth_date=f"19{40 + p % 60:02d}0{1 + p % 9}1{p % 9}", sex="MF"[p % 2],
                             num_studies=n_st, num_series=n_st * series, num_instances=n_st * series * per_series,
                             created_at=now, updated_at=now))
        _insert(db, Patient, rows)
    series_id = instance_id = 0
    for start in range(0, studies, 1000):  # one transaction per 1,000 studies
        with db.atomic():
            st_rows, se_rows, in_rows = [], [], []
            for s in range(start, min(studies, start + 1000)):
                modality, sop_class = MODALITIES[s % len(MODALITIES)]
                study_uid = f"{ROOT}.1.{s}"
                st_rows.append(dict(id=s + 1, patient=s // 2 + 1, study_uid=study_uid, study_date=study_date(s),
                                    study_time="101500", accession=f"ACC{s:07d}", study_id=str(s % 1000),
                                    description=f"{modality} EXAM", referring_physician="REFERRER^SYNTH",
                                    modalities=f"\\{modality}\\", sop_classes=f"\\{sop_class}\\",
                                    num_series=series, num_instances=series * per_series,
                                    created_at=now, updated_at=now))
                for k in range(series):
                    series_id += 1
                    se_rows.append(dict(id=series_id, study=s + 1, series_uid=f"{study_uid}.{k + 1}",
                                        modality=modality, series_number=k + 1, description=f"SERIES {k + 1}",
                                        series_date=study_date(s), series_time="101500",
                                        num_instances=per_series, created_at=now))
                    for i in range(per_series):
                        instance_id += 1
                        in_rows.append(dict(id=instance_id, series=series_id, sop_uid=f"{study_uid}.{k + 1}.{i + 1}",
                                            sop_class_uid=sop_class, instance_number=i + 1,
                                            transfer_syntax="1.2.840.10008.1.2.1", rows=512, columns=512,
                                            object_id=object_id(instance_id),
                                            size=526_000, sha256=hashlib.sha256(object_plaintext(instance_id)).hexdigest(),
                                            source="bench", received_at=now))
            _insert(db, Study, st_rows)
            _insert(db, Series, se_rows)
            _insert(db, Instance, in_rows)
    for model in (Patient, Study, Series, Instance):  # PostgreSQL: new rows' ids follow these explicit ones
        advance_sequence(db, model._meta.table_name)
    return {"patients": n_patients, "studies": studies, "series": series_id, "instances": instance_id}


# The three study-level queries of the benchmark: (label, matching keys, expected number of matches).
def queries(studies: int = 10_000) -> list[tuple[str, dict, int]]:
    n_patients = (studies + 1) // 2
    prefix = FAMILIES[7][:4]
    by_name = sum(min(2, studies - 2 * p) for p in range(n_patients) if FAMILIES[p % len(FAMILIES)].startswith(prefix))
    first, last = "20240301", "20240331"
    by_month = sum(1 for s in range(studies) if first <= study_date(s) <= last)
    return [
        ("exact PatientID", {"PatientID": patient_id(123)}, 2),
        ("PatientName wildcard", {"PatientName": prefix + "*"}, by_name),
        ("one-month StudyDate range", {"StudyDate": f"{first}-{last}"}, by_month),
    ]
