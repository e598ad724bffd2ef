"""Ways out: what a stored object becomes on its way to a reader.

transcode.py gives a DICOM peer (C-GET, C-MOVE, forwarding) or a DICOMweb client a transfer syntax
it accepts; render.py turns frames into JPEG/PNG for the viewer and WADO rendered, render_cache.py
keeps the recent ones. The archive's bytes are never changed: every conversion is of a copy.
"""
