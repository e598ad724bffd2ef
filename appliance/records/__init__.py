"""Records kept on the index that are not images: user accounts, DICOM peers, the modality
worklist and the audit log.

The CLI, the web admin and the DICOM node all read and change them through these modules, which
go through the index's repositories (appliance/index) like everything else.
"""
