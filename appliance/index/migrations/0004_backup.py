"""Backup state: what is offsite per target, and the history of runs.

A frozen copy of the schema as it was at this step (see models/backup.py).
"""

STATEMENTS = [
    """CREATE TABLE "backup_object" ("id" INTEGER NOT NULL PRIMARY KEY, "target" VARCHAR(255) NOT NULL, "object_id" VARCHAR(255) NOT NULL, "size" INTEGER NOT NULL, "uploaded_at" DATETIME NOT NULL, "manifest_at" DATETIME, "deleted_at" DATETIME)""",
    """CREATE UNIQUE INDEX "backup_object_target_object_id" ON "backup_object" ("target", "object_id")""",
    """CREATE TABLE "backup_run" ("id" INTEGER NOT NULL PRIMARY KEY, "target" VARCHAR(255) NOT NULL, "trigger" VARCHAR(255) NOT NULL, "started_at" DATETIME NOT NULL, "finished_at" DATETIME, "result" VARCHAR(255) NOT NULL, "objects" INTEGER NOT NULL, "bytes" INTEGER NOT NULL, "manifest" VARCHAR(255) NOT NULL, "error" TEXT NOT NULL)""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
