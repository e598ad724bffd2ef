"""Web area: the audit log (append-only, hash-chained), API tokens, web sessions.

A frozen copy of the schema as it was at this step (see models/web.py). The two
triggers make the audit table append-only for anything going through SQL; the
hash chain (appliance/records/audit.py) catches edits made around them.
"""

STATEMENTS = [
    """CREATE TABLE "audit_entry" ("id" INTEGER NOT NULL PRIMARY KEY, "at" DATETIME NOT NULL, "actor" VARCHAR(255) NOT NULL, "action" VARCHAR(255) NOT NULL, "address" VARCHAR(255) NOT NULL, "patient_id" VARCHAR(255) NOT NULL, "study_uid" VARCHAR(255) NOT NULL, "detail" TEXT NOT NULL, "prev_hash" VARCHAR(255) NOT NULL, "entry_hash" VARCHAR(255) NOT NULL)""",
    """CREATE INDEX "audit_entry_at" ON "audit_entry" ("at")""",
    """CREATE INDEX "audit_entry_actor" ON "audit_entry" ("actor")""",
    """CREATE INDEX "audit_entry_action" ON "audit_entry" ("action")""",
    """CREATE INDEX "audit_entry_patient_id" ON "audit_entry" ("patient_id")""",
    """CREATE INDEX "audit_entry_study_uid" ON "audit_entry" ("study_uid")""",
    """CREATE TRIGGER "audit_entry_no_update" BEFORE UPDATE ON "audit_entry" BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER "audit_entry_no_delete" BEFORE DELETE ON "audit_entry" BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TABLE "api_token" ("id" INTEGER NOT NULL PRIMARY KEY, "user_id" INTEGER NOT NULL, "name" VARCHAR(255) NOT NULL, "token_hash" VARCHAR(255) NOT NULL, "prefix" VARCHAR(255) NOT NULL, "created_at" DATETIME NOT NULL, "last_used_at" DATETIME, "revoked" INTEGER NOT NULL, FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE)""",
    """CREATE INDEX "api_token_user_id" ON "api_token" ("user_id")""",
    """CREATE UNIQUE INDEX "api_token_token_hash" ON "api_token" ("token_hash")""",
    """CREATE TABLE "web_session" ("id" INTEGER NOT NULL PRIMARY KEY, "sid_hash" VARCHAR(255) NOT NULL, "user_id" INTEGER NOT NULL, "address" VARCHAR(255) NOT NULL, "created_at" DATETIME NOT NULL, "last_seen" DATETIME NOT NULL, "expires_at" DATETIME NOT NULL, FOREIGN KEY ("user_id") REFERENCES "user" ("id") ON DELETE CASCADE)""",
    """CREATE UNIQUE INDEX "web_session_sid_hash" ON "web_session" ("sid_hash")""",
    """CREATE INDEX "web_session_user_id" ON "web_session" ("user_id")""",
    """CREATE INDEX "web_session_expires_at" ON "web_session" ("expires_at")""",
]


def up(migrator, db):
    for statement in STATEMENTS:
        db.execute_sql(statement)
