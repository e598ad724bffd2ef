"""PACS Appliance: a self-contained picture archive for small clinics."""
__version__ = "0.1.0"
