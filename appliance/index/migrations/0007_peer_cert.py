"""A peer's DICOM TLS client certificate: the SHA-256 fingerprint it must present when it calls us over
TLS (empty: not pinned). See appliance/dicom/policy.py.

A frozen copy of the schema change at this step (see models/retrieval.py).
"""

STATEMENTS = [
    """ALTER TABLE "peer" ADD COLUMN "cert_fingerprint" VARCHAR(255) NOT NULL DEFAULT ''""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
