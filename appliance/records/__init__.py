"""Records kept on the index that are not images: user accounts, DICOM peers, the modality
worklist and the audit log.

The CLI, the web admin and the DICOM node all read and change them through these modules, which
go through the index's repositories (appliance/index) like everything else.

Two modules here import nothing of the index: instances.py (what the index keeps of one instance,
as plain records) and values.py (DICOM dates and times as stored and matched). The ingest parser
uses them, so an ingest worker (dicom/workers.py) parses and seals without peewee or SQLCipher.
"""
