"""Errors the appliance expects and reports to people.

Each class carries what the caller needs to answer a peer: a DICOM status for
C-STORE, an HTTP status for the web, an exit code for the CLI. The message says
what went wrong and what to do about it; it never contains patient data.
"""
from __future__ import annotations

# The DICOM statuses these errors answer a C-STORE with (one table of codes: dicom/status.py).
from .dicom.status import (CANNOT_UNDERSTAND, DUPLICATE_REJECTED, OUT_OF_RESOURCES, PROCESSING_FAILURE,
                           REPLACEMENT_REFUSED)


class ApplianceError(Exception):
    """Base class: an expected failure with a message fit for a person."""

    exit_code = 1
    dimse_status = PROCESSING_FAILURE
    http_status = 500


class ConfigError(ApplianceError):
    exit_code = 2
    http_status = 500


class DataDirError(ApplianceError):
    """The data directory is missing, incomplete or already initialised."""

    exit_code = 2


class KeyStoreError(ApplianceError):
    """A key is missing, unreadable or wrong for the data it should open."""

    exit_code = 3


class IntegrityError(ApplianceError):
    """An archive object failed its authentication check: damaged or tampered."""

    exit_code = 4
    http_status = 500


class InvalidObject(ApplianceError):
    """Input that is not a storable DICOM object (not DICOM, truncated, missing UIDs)."""

    dimse_status = CANNOT_UNDERSTAND
    http_status = 400


class DiskFull(ApplianceError):
    """Free space is below the configured reserve; nothing is accepted until space is freed."""

    dimse_status = OUT_OF_RESOURCES
    http_status = 503  # PS3.18's "busy": the client may retry later, unlike a 409 conflict


class ConflictRejected(ApplianceError):
    """A different object already holds this SOP Instance UID and the policy is to reject."""

    dimse_status = DUPLICATE_REJECTED
    http_status = 409


class ReplacementRefused(ApplianceError):
    """A different object under a stored SOP Instance UID names another patient; the policy refuses it."""

    dimse_status = REPLACEMENT_REFUSED
    http_status = 409  # PS3.18 STOW: a conflict with what is stored; sending it again unchanged will not help


class NotFound(ApplianceError):
    http_status = 404
