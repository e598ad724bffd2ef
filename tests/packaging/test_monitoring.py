"""The fleet monitoring examples (image-build/monitoring/): the Prometheus alert rules are
valid and fire as intended (promtool), and they and the Grafana dashboard only use
metrics the box's /metrics really has."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "image-build" / "monitoring"
RULES = MONITORING / "pacs-alerts.yml"
DASHBOARD = MONITORING / "pacs-dashboard.json"
METRIC = re.compile(r"\bpacs_[a-z_]+\b")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: apt-get install prometheus (tests/run installs it)")
    return path


def exported_metrics() -> set[str]:
    """Metric names /metrics writes (web/health/views.py: _line(out, "name", ...))."""
    return set(re.findall(r'_line\(out, "(pacs_[a-z_]+)"', (ROOT / "web/health/views.py").read_text()))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_alert_rules_are_valid(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_alerts_fire_on_made_up_series_and_not_on_healthy_boxes(promtool):
    result = subprocess.run([promtool, "test", "rules", "pacs-alerts.test.yml"], cwd=MONITORING,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_is_caught(promtool, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("predict_linear(pacs_disk_free_bytes[6h]", "predict_linear(pacs_disk_free_bytes[6h"))
    assert subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True).returncode != 0


def test_dashboard_queries_parse(promtool, tmp_path):
    """Each panel query as a recording rule, so promtool parses it (Grafana's $variables filled in)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_metrics()
    assert {"pacs_disk_free_bytes", "pacs_backup_age_seconds", "pacs_verify_last_damaged",
            "pacs_associations_total", "pacs_instances_received_total"} <= exported
    used = set(METRIC.findall(RULES.read_text())) | set(METRIC.findall(" ".join(dashboard_exprs())))
    assert used - exported == set(), "not in /metrics"
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {"Ingest rate", "Disk free and 7-day forecast", "Last backup age", "Verify: damaged or missing",
            "Refused associations (15 min)"} <= titles
