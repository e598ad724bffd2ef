"""The recycle bin: deleted studies, series and instances kept restorable for a while (issue 22 item 4;
see models/bin.py). A frozen copy of the schema change at this step."""

STATEMENTS = [
    """CREATE TABLE "binned_object" ("id" INTEGER NOT NULL PRIMARY KEY, "batch" VARCHAR(255) NOT NULL, "level" VARCHAR(255) NOT NULL, "object_id" VARCHAR(255) NOT NULL, "sop_uid" VARCHAR(255) NOT NULL, "series_uid" VARCHAR(255) NOT NULL, "study_uid" VARCHAR(255) NOT NULL, "patient_id" VARCHAR(255) NOT NULL, "size" INTEGER NOT NULL, "sha256" VARCHAR(255) NOT NULL, "source" VARCHAR(255) NOT NULL, "deleted_at" DATETIME NOT NULL, "deleted_by" VARCHAR(255) NOT NULL, "reason" VARCHAR(255) NOT NULL, "purge_after" DATETIME NOT NULL, "purged_at" DATETIME)""",
    """CREATE INDEX "binned_object_batch" ON "binned_object" ("batch")""",
    """CREATE UNIQUE INDEX "binned_object_object_id" ON "binned_object" ("object_id")""",
    """CREATE INDEX "binned_object_study_uid" ON "binned_object" ("study_uid")""",
    """CREATE INDEX "binned_object_purge_after" ON "binned_object" ("purge_after")""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
