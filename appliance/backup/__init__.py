"""Offsite backup and disaster restore.

Modules: targets/ (folder / SFTP / S3 behind one interface, by URL scheme),
manifest.py (offsite names, sealing, the manifest), sync.py (one backup run),
schedule.py (daily window, run now, retries), verify.py, fetch.py (download, check
every tag, adopt: shared by restore.py and recycling), restore.py, service.py
(``app.backup``: run, status, is_offsite). The index snapshot is taken by
appliance/index/snapshot.py, and the backup's state lives in ``index.backup``
(appliance/index/backup.py): nothing here imports peewee or the models.

Offsite layout, format version 1
================================

Everything under the target's root (folder, SFTP directory, or S3 prefix)::

    config                         plaintext JSON {"format": "pacs-appliance-offsite", "version": 1}
                                   (no secrets: it only says what this directory is)
    keyring.sealed                 the keyring sealed with the recovery key (archive/keys.py:
                                   "PACSKEYS1" | 12-byte nonce | AES-256-GCM(keyring JSON), the
                                   key HKDF-SHA256(recovery key, info "pacs-appliance keyring wrap v1"))
    objects/<id[0:2]>/<id>         an archive object exactly as on the box's disk (archive/envelope.py,
                                   format 1); <id> is its random 32-hex-digit object id, bound into
                                   every GCM tag, so an object cannot be renamed or swapped
    snapshots/<n>                  an index snapshot: the SQLCipher database file (itself encrypted with
                                   the index key) sealed again as an envelope-format-1 blob; a PostgreSQL
                                   index is first copied row by row into such a file (index/transfer.py),
                                   so the format is the same for both backends
    manifests/<time>-<n>           a manifest, sealed as an envelope-format-1 blob
    .tmp-<16 hex>                  (in any directory) an upload in progress or abandoned; never read

``<n>`` is 32 random hex digits, shared by a snapshot and the manifest written
in the same run; ``<time>`` is the UTC time of the run as ``YYYYMMDDTHHMMSS.ffffffZ`` (microseconds)
(the provider sees upload times anyway), so names sort by age.

Snapshots and manifests are sealed with envelope.seal, using as "object id"
the 16 bytes of ``<n>`` and, for the key, ``HKDF-SHA256(archive key,
salt=None, info="pacs-appliance offsite v1", 32 bytes)`` of the archive key
named in the envelope header (the current one when written). The tags thus
bind each blob to its name, and an archive object can never pass for a
snapshot or a manifest (different key).

A manifest's plaintext (manifest version 2) is a JSON header line, then one line per object, in
object-id order::

    {"format": "pacs-appliance-manifest", "version": 2, "created": "<ISO 8601 UTC>",
     "snapshot": {"name": "snapshots/<n>", "size": <bytes offsite>},
     "keyring": {"name": "keyring.sealed", "size": <bytes>}, "objects": <count>}
    <object id> <bytes offsite>
    ...

and lists exactly the objects the snapshot's index refers to (instances and
replaced objects), which is everything a complete restore needs. Lines, in order,
so a run writes them to a file as it goes and a reader streams them: a million
objects are never held in memory. Manifest version 1 (older backups) was one JSON
document, ``{..., "objects": {"<object id>": <bytes offsite>, ...}}`` with the same
other fields; it is still read (manifest.parse).

Write order, so a half sync never looks complete: config and keyring.sealed,
then the objects, then the snapshot, then the manifest last. Every write is
atomic (targets/base.py). A reader takes the newest manifest that opens.

What the storage provider learns: the number and sizes of objects, snapshots
and manifests, and when they were written. No UIDs, names or dates of patients
appear in any name; nothing can be read without the recovery key.

Retention: an object that has left the box stays offsite for
``[backup] retention_days``, and so do manifests (the newest always stays);
a snapshot goes with its manifest. An object is deleted offsite only after
every manifest that lists it has expired.

A rollback by the provider (hiding the newest manifests) is not detected by
the format itself; ``backup status`` on the box shows the last manifest
written, and verify reports which manifest it checked.
"""
from .service import BackupService

__all__ = ["BackupService"]
