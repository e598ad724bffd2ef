"""Replaced versions that say whose they were, and newcomers held for an admin (issue 14 item 5).

``replaced_object`` rows now carry the patient ID and study of their version (shown by
``pacs-appliance storage versions`` and the admin page) and ``held``: 1 for an object that
arrived under an existing SOP Instance UID naming another patient and was kept aside for an
admin to accept or discard ([storage] on_patient_change = "hold"); 0 for a former current
version. Rows from before this step keep '' (unknown) and 0.

A frozen copy of the schema change at this step (see models/core.py).
"""

STATEMENTS = [
    """ALTER TABLE "replaced_object" ADD COLUMN "patient_id" VARCHAR(255) NOT NULL DEFAULT ''""",
    """ALTER TABLE "replaced_object" ADD COLUMN "study_uid" VARCHAR(255) NOT NULL DEFAULT ''""",
    """ALTER TABLE "replaced_object" ADD COLUMN "held" INTEGER NOT NULL DEFAULT 0""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
