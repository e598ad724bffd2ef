"""DICOM peers, worklist items, performed procedure steps and the forwarding queue.

A frozen copy of the schema as it was at this step (see models/retrieval.py).
"""

STATEMENTS = [
    """CREATE TABLE "peer" ("id" INTEGER NOT NULL PRIMARY KEY, "ae_title" VARCHAR(255) NOT NULL, "host" VARCHAR(255) NOT NULL, "port" INTEGER NOT NULL, "description" VARCHAR(255) NOT NULL, "can_store" INTEGER NOT NULL, "can_query" INTEGER NOT NULL, "can_retrieve" INTEGER NOT NULL, "can_receive_moves" INTEGER NOT NULL, "created_at" DATETIME NOT NULL)""",
    """CREATE UNIQUE INDEX "peer_ae_title" ON "peer" ("ae_title")""",
    """CREATE TABLE "worklist_item" ("id" INTEGER NOT NULL PRIMARY KEY, "patient_name" VARCHAR(255) NOT NULL, "patient_name_upper" VARCHAR(255) NOT NULL, "patient_id" VARCHAR(255) NOT NULL, "birth_date" VARCHAR(255) NOT NULL, "sex" VARCHAR(255) NOT NULL, "accession" VARCHAR(255) NOT NULL, "requested_procedure_id" VARCHAR(255) NOT NULL, "requested_procedure_description" VARCHAR(255) NOT NULL, "study_uid" VARCHAR(255) NOT NULL, "step_id" VARCHAR(255) NOT NULL, "step_description" VARCHAR(255) NOT NULL, "station_ae" VARCHAR(255) NOT NULL, "modality" VARCHAR(255) NOT NULL, "scheduled_date" VARCHAR(255) NOT NULL, "scheduled_time" VARCHAR(255) NOT NULL, "performing_physician" VARCHAR(255) NOT NULL, "referring_physician" VARCHAR(255) NOT NULL, "status" VARCHAR(255) NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL)""",
    """CREATE INDEX "worklist_item_patient_id" ON "worklist_item" ("patient_id")""",
    """CREATE INDEX "worklist_item_accession" ON "worklist_item" ("accession")""",
    """CREATE UNIQUE INDEX "worklist_item_study_uid" ON "worklist_item" ("study_uid")""",
    """CREATE INDEX "worklist_item_station_ae" ON "worklist_item" ("station_ae")""",
    """CREATE INDEX "worklist_item_modality" ON "worklist_item" ("modality")""",
    """CREATE INDEX "worklist_item_scheduled_date" ON "worklist_item" ("scheduled_date")""",
    """CREATE TABLE "performed_step" ("id" INTEGER NOT NULL PRIMARY KEY, "sop_uid" VARCHAR(255) NOT NULL, "worklist_item_id" INTEGER, "status" VARCHAR(255) NOT NULL, "calling_ae" VARCHAR(255) NOT NULL, "study_uid" VARCHAR(255) NOT NULL, "modality" VARCHAR(255) NOT NULL, "attributes" TEXT NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL, FOREIGN KEY ("worklist_item_id") REFERENCES "worklist_item" ("id") ON DELETE SET NULL)""",
    """CREATE UNIQUE INDEX "performed_step_sop_uid" ON "performed_step" ("sop_uid")""",
    """CREATE INDEX "performed_step_worklist_item_id" ON "performed_step" ("worklist_item_id")""",
    """CREATE TABLE "forward_job" ("id" INTEGER NOT NULL PRIMARY KEY, "sop_uid" VARCHAR(255) NOT NULL, "object_id" VARCHAR(255) NOT NULL, "destination" VARCHAR(255) NOT NULL, "state" VARCHAR(255) NOT NULL, "attempts" INTEGER NOT NULL, "next_attempt_at" DATETIME NOT NULL, "last_error" VARCHAR(255) NOT NULL, "created_at" DATETIME NOT NULL, "sent_at" DATETIME)""",
    """CREATE INDEX "forward_job_state" ON "forward_job" ("state")""",
    """CREATE INDEX "forward_job_next_attempt_at" ON "forward_job" ("next_attempt_at")""",
    """CREATE UNIQUE INDEX "forward_job_object_id_destination" ON "forward_job" ("object_id", "destination")""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
