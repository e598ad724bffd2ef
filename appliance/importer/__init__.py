"""Importing files: the watched inbox (watcher.py) and ``pacs-appliance import`` (oneshot.py).

sources.py turns what is on disk (loose files, ZIPs, DICOMDIR media trees) into
entries to ingest; runner.py feeds one entry through the one ingest path and
says in plain words what happened. Neither ever writes patient data to disk
outside the archive: ZIP members are read into memory or streamed.
"""
