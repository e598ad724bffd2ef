"""HTTP errors of the DICOMweb API: each carries its status and a reason a person can act on."""
from __future__ import annotations

from appliance.errors import ApplianceError


class DicomWebError(ApplianceError):
    http_status = 400


class BadRequest(DicomWebError):
    http_status = 400


class NotAcceptable(DicomWebError):
    http_status = 406


class UnsupportedMediaType(DicomWebError):
    http_status = 415
