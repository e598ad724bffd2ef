"""DICOM TLS per peer: associations we open to a peer with ``tls`` set use TLS (appliance/dicom/tls.py).

A frozen copy of the schema change at this step (see models/retrieval.py).
"""

STATEMENTS = [
    """ALTER TABLE "peer" ADD COLUMN "tls" INTEGER NOT NULL DEFAULT 0""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
