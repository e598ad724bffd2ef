"""Patients, studies, series, instances, replaced objects and users.

A frozen copy of the schema as it was at this step: later model changes come
as new numbered scripts, never as edits here.
"""

STATEMENTS = [
    """CREATE TABLE "patient" ("id" INTEGER NOT NULL PRIMARY KEY, "patient_key" VARCHAR(255) NOT NULL, "patient_id" VARCHAR(255) NOT NULL, "issuer" VARCHAR(255) NOT NULL, "name" VARCHAR(255) NOT NULL, "name_upper" VARCHAR(255) NOT NULL, "birth_date" VARCHAR(255) NOT NULL, "sex" VARCHAR(255) NOT NULL, "num_studies" INTEGER NOT NULL, "num_series" INTEGER NOT NULL, "num_instances" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL)""",
    """CREATE UNIQUE INDEX "patient_patient_key" ON "patient" ("patient_key")""",
    """CREATE INDEX "patient_patient_id" ON "patient" ("patient_id")""",
    """CREATE INDEX "patient_name_upper" ON "patient" ("name_upper")""",
    """CREATE TABLE "study" ("id" INTEGER NOT NULL PRIMARY KEY, "patient_id" INTEGER NOT NULL, "study_uid" VARCHAR(255) NOT NULL, "study_date" VARCHAR(255) NOT NULL, "study_time" VARCHAR(255) NOT NULL, "accession" VARCHAR(255) NOT NULL, "study_id" VARCHAR(255) NOT NULL, "description" VARCHAR(255) NOT NULL, "referring_physician" VARCHAR(255) NOT NULL, "patient_age" VARCHAR(255) NOT NULL, "institution" VARCHAR(255) NOT NULL, "modalities" VARCHAR(255) NOT NULL, "sop_classes" TEXT NOT NULL, "num_series" INTEGER NOT NULL, "num_instances" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL, FOREIGN KEY ("patient_id") REFERENCES "patient" ("id") ON DELETE CASCADE)""",
    """CREATE INDEX "study_patient_id" ON "study" ("patient_id")""",
    """CREATE UNIQUE INDEX "study_study_uid" ON "study" ("study_uid")""",
    """CREATE INDEX "study_study_date" ON "study" ("study_date")""",
    """CREATE INDEX "study_accession" ON "study" ("accession")""",
    """CREATE INDEX "study_updated_at" ON "study" ("updated_at")""",
    """CREATE TABLE "series" ("id" INTEGER NOT NULL PRIMARY KEY, "study_id" INTEGER NOT NULL, "series_uid" VARCHAR(255) NOT NULL, "modality" VARCHAR(255) NOT NULL, "series_number" INTEGER, "description" VARCHAR(255) NOT NULL, "body_part" VARCHAR(255) NOT NULL, "series_date" VARCHAR(255) NOT NULL, "series_time" VARCHAR(255) NOT NULL, "station_name" VARCHAR(255) NOT NULL, "num_instances" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, FOREIGN KEY ("study_id") REFERENCES "study" ("id") ON DELETE CASCADE)""",
    """CREATE INDEX "series_study_id" ON "series" ("study_id")""",
    """CREATE UNIQUE INDEX "series_series_uid" ON "series" ("series_uid")""",
    """CREATE INDEX "series_modality" ON "series" ("modality")""",
    """CREATE TABLE "instance" ("id" INTEGER NOT NULL PRIMARY KEY, "series_id" INTEGER NOT NULL, "sop_uid" VARCHAR(255) NOT NULL, "sop_class_uid" VARCHAR(255) NOT NULL, "instance_number" INTEGER, "transfer_syntax" VARCHAR(255) NOT NULL, "rows" INTEGER, "columns" INTEGER, "frames" INTEGER, "content_date" VARCHAR(255) NOT NULL, "content_time" VARCHAR(255) NOT NULL, "object_id" VARCHAR(255) NOT NULL, "size" INTEGER NOT NULL, "sha256" VARCHAR(255) NOT NULL, "source" VARCHAR(255) NOT NULL, "received_at" DATETIME NOT NULL, FOREIGN KEY ("series_id") REFERENCES "series" ("id") ON DELETE CASCADE)""",
    """CREATE INDEX "instance_series_id" ON "instance" ("series_id")""",
    """CREATE UNIQUE INDEX "instance_sop_uid" ON "instance" ("sop_uid")""",
    """CREATE UNIQUE INDEX "instance_object_id" ON "instance" ("object_id")""",
    """CREATE INDEX "instance_received_at" ON "instance" ("received_at")""",
    """CREATE TABLE "replaced_object" ("id" INTEGER NOT NULL PRIMARY KEY, "sop_uid" VARCHAR(255) NOT NULL, "object_id" VARCHAR(255) NOT NULL, "size" INTEGER NOT NULL, "sha256" VARCHAR(255) NOT NULL, "source" VARCHAR(255) NOT NULL, "replaced_at" DATETIME NOT NULL)""",
    """CREATE INDEX "replaced_object_sop_uid" ON "replaced_object" ("sop_uid")""",
    """CREATE UNIQUE INDEX "replaced_object_object_id" ON "replaced_object" ("object_id")""",
    """CREATE TABLE "user" ("id" INTEGER NOT NULL PRIMARY KEY, "username" VARCHAR(255) NOT NULL, "password_hash" VARCHAR(255) NOT NULL, "role" VARCHAR(255) NOT NULL, "disabled" INTEGER NOT NULL, "created_at" DATETIME NOT NULL)""",
    """CREATE UNIQUE INDEX "user_username" ON "user" ("username")""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
