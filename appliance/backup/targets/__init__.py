"""Offsite targets behind one small interface (base.py), one module per kind, chosen by URL scheme:

- folder.py: ``file:///mnt/nas/pacs`` or a plain path;
- sftp.py: ``sftp://user@host:port/path``, key-based, host key pinned on first use;
- s3.py: ``s3://bucket/prefix`` on AWS or any S3-compatible store.

registry.py maps schemes to classes and opens a target from its URL and options.
tests/backup/test_target_contract.py runs one suite against each of them.
"""
from .base import Target, TargetError, Throttle, ThrottledReader, check_name
from .folder import FolderTarget
from .registry import TARGETS, check_url, open_target
from .s3 import S3Target
from .sftp import HostKeyError, SftpTarget, check_host_key

__all__ = ["TARGETS", "FolderTarget", "HostKeyError", "S3Target", "SftpTarget", "Target", "TargetError",
           "Throttle", "ThrottledReader", "check_host_key", "check_name", "check_url", "open_target"]
