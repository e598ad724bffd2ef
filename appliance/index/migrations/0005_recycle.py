"""Storage recycling: studies whose only copy is offsite (see models/recycle.py).

A frozen copy of the schema as it was at this step.
"""

STATEMENTS = [
    """CREATE TABLE "recycled_study" ("id" INTEGER NOT NULL PRIMARY KEY, "study_uid" VARCHAR(255) NOT NULL, "patient_id" VARCHAR(255) NOT NULL, "patient_name" VARCHAR(255) NOT NULL, "study_date" VARCHAR(255) NOT NULL, "accession" VARCHAR(255) NOT NULL, "description" VARCHAR(255) NOT NULL, "modalities" VARCHAR(255) NOT NULL, "num_instances" INTEGER NOT NULL, "bytes" INTEGER NOT NULL, "target" VARCHAR(255) NOT NULL, "reason" VARCHAR(255) NOT NULL, "recycled_at" DATETIME NOT NULL, "restored_at" DATETIME)""",
    """CREATE INDEX "recycled_study_study_uid" ON "recycled_study" ("study_uid")""",
    """CREATE INDEX "recycled_study_recycled_at" ON "recycled_study" ("recycled_at")""",
    """CREATE TABLE "recycled_object" ("id" INTEGER NOT NULL PRIMARY KEY, "study_id" INTEGER NOT NULL, "object_id" VARCHAR(255) NOT NULL, "sop_uid" VARCHAR(255) NOT NULL, "size" INTEGER NOT NULL, "sha256" VARCHAR(255) NOT NULL, "offsite_size" INTEGER NOT NULL, "source" VARCHAR(255) NOT NULL, "replaced" INTEGER NOT NULL, "purged_at" DATETIME, FOREIGN KEY ("study_id") REFERENCES "recycled_study" ("id") ON DELETE CASCADE)""",
    """CREATE INDEX "recycled_object_study_id" ON "recycled_object" ("study_id")""",
    """CREATE UNIQUE INDEX "recycled_object_object_id" ON "recycled_object" ("object_id")""",
    # Pending deletions are looked up at every start: keep that a small index scan.
    """CREATE INDEX "recycled_object_pending" ON "recycled_object" ("purged_at") WHERE "purged_at" IS NULL""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
