"""The DICOM network node (pynetdicom): association policy, and one module per DIMSE service.

registry.py is the table of services (SOP classes, roles, the handler per event) the
node serves; status.py holds the DIMSE status codes.
"""
