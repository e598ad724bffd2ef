"""The DICOM network node (pynetdicom): association policy and one handler module per service."""
