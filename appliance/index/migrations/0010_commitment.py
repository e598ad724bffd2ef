"""Durable storage commitment: requests kept until their report is delivered (see models/commitment.py).

A frozen copy of the schema change at this step.
"""

STATEMENTS = [
    """CREATE TABLE "commitment_request" ("id" INTEGER NOT NULL PRIMARY KEY, "transaction_uid" VARCHAR(255) NOT NULL, "calling_ae" VARCHAR(255) NOT NULL, "references" TEXT NOT NULL, "state" VARCHAR(255) NOT NULL, "attempts" INTEGER NOT NULL, "next_attempt_at" DATETIME NOT NULL, "last_error" VARCHAR(255) NOT NULL, "created_at" DATETIME NOT NULL, "delivered_at" DATETIME)""",
    """CREATE UNIQUE INDEX "commitment_request_transaction_uid" ON "commitment_request" ("transaction_uid")""",
    """CREATE INDEX "commitment_request_state" ON "commitment_request" ("state")""",
    """CREATE INDEX "commitment_request_next_attempt_at" ON "commitment_request" ("next_attempt_at")""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
