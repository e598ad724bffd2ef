"""Write batches in flight: the object ids a correction will seal, recorded before it seals any
(see models/batch.py). A frozen copy of the schema change at this step."""

STATEMENTS = [
    """CREATE TABLE "pending_object" ("id" INTEGER NOT NULL PRIMARY KEY, "batch" VARCHAR(255) NOT NULL, "object_id" VARCHAR(255) NOT NULL, "kind" VARCHAR(255) NOT NULL, "created_at" DATETIME NOT NULL)""",
    """CREATE INDEX "pending_object_batch" ON "pending_object" ("batch")""",
    """CREATE UNIQUE INDEX "pending_object_object_id" ON "pending_object" ("object_id")""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
