"""Changing a few settings from the admin UI by editing <data dir>/appliance.toml in place.

Line-based on purpose: the file is the documented template with comments, and an
admin may have edited it by hand, so we replace (or uncomment) just the one
``key = value`` line under its ``[section]`` and leave everything else alone.
"""
from __future__ import annotations

import re
import tomllib
import unicodedata
from pathlib import Path

from appliance.archive.fsutil import write_file_atomic
from appliance.config import SETTINGS, Setting, _coerce, _toml_value
from appliance.errors import ConfigError

# The settings an office manager may reasonably change from a browser; the rest stay in the file.
EDITABLE = (
    ("dicom", "allowed_callers"),
    ("backup", "target"),
    ("backup", "window"),
    ("backup", "warn_after_hours"),
    ("http", "session_idle_minutes"),
    ("log", "level"),
)


def setting(section: str, key: str) -> Setting:
    for s in SETTINGS:
        if (s.section, s.key) == (section, key):
            return s
    raise ConfigError(f"no setting [{section}] {key}")


def parse_form_value(s: Setting, text: str):
    """A form field's text as the setting's type (lists: one per line or comma-separated).

    Refuses what the appliance would refuse (or be locked out by) at its next start,
    since the change only takes effect then.
    """
    if isinstance(s.default, list):
        text = ",".join(part.strip() for part in text.replace("\r", "").split("\n"))
    if any(unicodedata.category(c) == "Cc" for c in text):  # TOML strings cannot hold them unescaped
        raise ConfigError(f"[{s.section}] {s.key}: control characters (tabs, NULs, ...) are not allowed")
    value = _coerce(s, text.strip(), "the settings page")
    if s.section == "log" and s.key == "level" and str(value).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log level must be DEBUG, INFO, WARNING or ERROR")
    if (s.section, s.key) == ("backup", "target") and value:
        from appliance.backup.targets.registry import check_url

        check_url(value)  # its form only; the Test button connects
    if (s.section, s.key) == ("backup", "window"):
        from appliance.backup.schedule import parse_window

        parse_window(value)  # the scheduler parses it at start: a bad window would stop the appliance starting
    if (s.section, s.key) == ("http", "session_idle_minutes") and value < 1:
        raise ConfigError("[http] session_idle_minutes must be at least 1 (0 would end every session at once)")
    if (s.section, s.key) == ("backup", "warn_after_hours") and value < 0:
        raise ConfigError("[backup] warn_after_hours cannot be negative")
    return value.upper() if s.key == "level" else value


def set_value(path: Path, section: str, key: str, value) -> None:
    s = setting(section, key)
    line = f"{key} = {_toml_value(value)}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    header = next((i for i, text in enumerate(lines) if text.strip() == f"[{section}]"), None)
    if header is None:
        lines += ["", f"[{section}]", line]
    else:
        end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        pattern = re.compile(rf"^\s*#?\s*{re.escape(key)}\s*=")
        found = [i for i in range(header + 1, end) if pattern.match(lines[i])]
        active = [i for i in found if not lines[i].lstrip().startswith("#")]
        target = (active or found or [None])[0]
        if target is None:
            lines.insert(header + 1, line)
        else:
            lines[target] = line
    text = "\n".join(lines) + "\n"
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: the change would not be valid TOML ({exc}); edit the file by hand") from None
    _coerce(s, parsed[section][key], str(path))
    write_file_atomic(path, text.encode("utf-8"), mode=0o640)


def file_values(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return {}
