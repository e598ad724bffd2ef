"""Configuration: embedded defaults < the data directory's appliance.toml < PACS_<SECTION>_<KEY> variables."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config as config_mod
from appliance.config import SETTINGS, load, render_documented_defaults
from appliance.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_documented_defaults_file_is_current():
    """config/appliance.toml is exactly what the code renders: every setting documented, none stale.
    Regenerate it with render_documented_defaults() after adding a setting."""
    assert (REPO / "config" / "appliance.toml").read_text(encoding="utf-8") == render_documented_defaults()


def test_every_setting_is_documented_with_its_env_name():
    text = render_documented_defaults()
    for s in SETTINGS:
        assert s.help.strip(), f"[{s.section}] {s.key} has no help text"
        assert f"(env: {s.env_name})" in text
        assert f"# {s.key} = " in text


def test_documented_defaults_parse_to_the_defaults(tmp_path):
    """Uncommenting every line of the documented file changes nothing."""
    text = render_documented_defaults()
    uncommented = "\n".join(line[2:] if line.startswith("# ") and " = " in line and "(env:" not in line else line
                            for line in text.splitlines())
    (tmp_path / "appliance.toml").write_text(uncommented)
    cfg = load(tmp_path, env={})
    for s in SETTINGS:
        assert getattr(getattr(cfg, s.section), s.key) == s.default, s.env_name
        assert cfg.sources[f"{s.section}.{s.key}"].endswith("appliance.toml")


def test_defaults_without_a_file(tmp_path):
    cfg = load(tmp_path, env={})
    assert (cfg.dicom.ae_title, cfg.dicom.port, cfg.http.port) == ("PACSBOX", 11112, 8080)
    assert cfg.sources["dicom.port"] == "default"


def test_file_overrides_defaults_and_env_overrides_file(tmp_path):
    (tmp_path / "appliance.toml").write_text(
        '[dicom]\nport = 11113\nae_title = "FILEAE"\nallowed_callers = ["A", "B@10.0.0.1"]\n'
        '[index]\ncase_sensitive_names = true\n')
    cfg = load(tmp_path, env={})
    assert (cfg.dicom.port, cfg.dicom.ae_title, cfg.dicom.allowed_callers) == (11113, "FILEAE", ["A", "B@10.0.0.1"])
    assert cfg.index.case_sensitive_names is True
    env = {"PACS_DICOM_PORT": "11114", "PACS_DICOM_ALLOWED_CALLERS": "X, Y@127.0.0.1",
           "PACS_INDEX_CASE_SENSITIVE_NAMES": "no"}
    cfg = load(tmp_path, env=env)
    assert (cfg.dicom.port, cfg.dicom.ae_title) == (11114, "FILEAE")
    assert cfg.dicom.allowed_callers == ["X", "Y@127.0.0.1"]
    assert cfg.index.case_sensitive_names is False
    assert cfg.sources["dicom.port"] == "$PACS_DICOM_PORT"


@pytest.mark.parametrize("text, message", [
    ("[dicom]\nport = 'eleven'\n", "expected a int"),
    ("[dicom]\nprot = 1\n", "unknown setting"),
    ("[dicom\n", "not valid TOML"),
    ("dicom = 1\n", "must be a"),
])
def test_bad_file_values_are_clear_errors(tmp_path, text, message):
    (tmp_path / "appliance.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, env={})


def test_bad_env_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"\$PACS_DICOM_PORT"):
        load(tmp_path, env={"PACS_DICOM_PORT": "many"})


def test_default_data_dir():
    assert config_mod.default_data_dir({}) == Path("var")
    assert config_mod.default_data_dir({"PACS_DATA_DIR": "/srv/pacs"}) == Path("/srv/pacs")
