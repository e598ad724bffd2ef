"""From a target URL's scheme to the class that handles it.

Adding a kind of target (WebDAV, Azure, ...) means one new module with a class
following base.TargetClass, one line in ``TARGETS``, and one line in the
contract test's list of targets.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

from ...errors import ConfigError
from .base import Target, TargetClass
from .folder import FolderTarget
from .s3 import S3Target
from .sftp import SftpTarget

TARGETS: Mapping[str, TargetClass] = MappingProxyType({
    scheme: cls for cls in (FolderTarget, SftpTarget, S3Target) for scheme in cls.SCHEMES})
PLAIN_PATH = "file"  # the scheme of a URL without one (a plain path)


def target_class(url: str, *, targets: Mapping[str, TargetClass] = TARGETS) -> TargetClass:
    if not url:
        raise ConfigError(f"no backup target configured: set [backup] target ({_forms(targets)})")
    scheme = urlsplit(url).scheme.lower() or PLAIN_PATH
    try:
        return targets[scheme]
    except KeyError:
        raise ConfigError(f"unknown backup target scheme {scheme!r}: use {_forms(targets, ' or ')}") from None


def check_url(url: str, *, targets: Mapping[str, TargetClass] = TARGETS) -> None:
    """Check the URL's form without connecting or reading any file (ConfigError says what is wrong)."""
    target_class(url, targets=targets).parse_url(url)


def open_target(url: str, *, targets: Mapping[str, TargetClass] = TARGETS, **options: Any) -> Target:
    """Open the target named by ``url``; credentials come from the options (files) or the environment,
    never the URL. Each class reads only the options it declares; an option no class declares is a bug."""
    unknown = set(options) - {name for cls in targets.values() for name in cls.OPTIONS}
    if unknown:
        raise TypeError(f"unknown target options {sorted(unknown)}")
    return target_class(url, targets=targets).from_url(url, options)


def _forms(targets: Mapping[str, TargetClass], last: str = ", ") -> str:
    forms = list(dict.fromkeys(cls.EXAMPLE for cls in targets.values()))
    return ", ".join(forms[:-1]) + last + forms[-1] if len(forms) > 1 else forms[0]
