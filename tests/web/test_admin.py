"""Every route and permission, the admin pages' changes, the audit log, health and metrics (Flask test client)."""
import io
import re

import pytest
from click.testing import CliRunner
from web_support import USER_PASSWORD, login, make_user, page_csrf

from synth import make_instance
from indexkit import rows

from appliance.ingest import Origin
from appliance.records import accounts

OPEN_ENDPOINTS = {"static", "auth.login", "health.healthz", "health.metrics"}


def _url(rule) -> str:
    return rule.build({arg: "1" for arg in rule.arguments}, append_unknown=False)[1]


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPEN_ENDPOINTS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_refuses_anonymous_requests(flask_app, client):
    routes = list(_routes(flask_app))
    assert len(routes) > 20
    for rule, method in routes:
        r = client.open(_url(rule), method=method)
        if rule.endpoint == "auth.logout":
            assert r.status_code == 302 and r.headers["Location"] == "/login"
            continue
        assert r.status_code in (302, 401), f"{method} {rule} answered {r.status_code} to nobody"
        if r.status_code == 302:
            assert r.headers["Location"].startswith("/login")
        assert b"PID" not in r.data


def test_clinician_cannot_reach_admin_pages(flask_app, clinician_client):
    assert clinician_client.get("/").status_code == 200  # the dashboard is for every role
    token = page_csrf(clinician_client)
    for rule, method in _routes(flask_app):
        if not rule.endpoint.startswith("admin.") or rule.endpoint == "admin.home":
            continue
        r = clinician_client.open(_url(rule), method=method, data={"csrf_token": token})
        assert r.status_code == 403, f"clinician got {r.status_code} from {method} {rule}"


def test_technologist_gets_worklist_only(appliance, flask_app):
    make_user(appliance, "tech1", "technologist")
    c = flask_app.test_client()
    login(c, "tech1", USER_PASSWORD)
    assert c.get("/admin/worklist").status_code == 200
    for path in ("/admin/peers", "/admin/users", "/admin/audit", "/admin/settings", "/admin/audit.csv"):
        assert c.get(path).status_code == 403


def test_admin_sees_every_page(admin_client):
    for path in ("/", "/admin/peers", "/admin/users", "/admin/worklist", "/admin/audit", "/admin/settings"):
        r = admin_client.get(path)
        assert r.status_code == 200, path
        assert r.headers["Cache-Control"] == "no-store"
        assert "<script>" not in r.text and " style=" not in r.text and "onclick" not in r.text


def test_static_assets_are_vendored(admin_client):
    html = admin_client.get("/").text
    for ref in re.findall(r'(?:href|src)="([^"]+)"', html):
        assert not ref.startswith(("http:", "https:", "//")), f"external asset {ref}"
    assert admin_client.get("/static/app.css").status_code == 200
    assert admin_client.get("/static/app.js").status_code == 200


def test_users_page_changes_accounts_and_audits(appliance, admin_client):
    t = page_csrf(admin_client, "/admin/users")
    r = admin_client.post("/admin/users", data={"csrf_token": t, "username": "nurse.joy", "password": USER_PASSWORD,
                                                "role": "technologist"}, follow_redirects=True)
    assert "Created nurse.joy" in r.text
    r = admin_client.post("/admin/users", data={"csrf_token": t, "username": "x", "password": "short",
                                                "role": "clinician"}, follow_redirects=True)
    assert "user names are 2-64" in r.text
    admin_client.post("/admin/users/nurse.joy/role", data={"csrf_token": t, "role": "clinician"})
    assert accounts.get_user(appliance.index.accounts, "nurse.joy").role == "clinician"
    admin_client.post("/admin/users/nurse.joy/password", data={"csrf_token": t, "password": "another-password-1"})
    assert accounts.authenticate(appliance.index.accounts, "nurse.joy", "another-password-1")
    admin_client.post("/admin/users/nurse.joy/disable", data={"csrf_token": t})
    assert accounts.get_user(appliance.index.accounts, "nurse.joy").disabled
    admin_client.post("/admin/users/nurse.joy/enable", data={"csrf_token": t})
    assert not accounts.get_user(appliance.index.accounts, "nurse.joy").disabled
    r = admin_client.post("/admin/users/admin/disable", data={"csrf_token": t}, follow_redirects=True)
    assert "cannot disable yourself" in r.text
    r = admin_client.post("/admin/users/admin/role", data={"csrf_token": t, "role": "clinician"},
                          follow_redirects=True)
    assert "last active admin" in r.text

    r = admin_client.post("/admin/users/nurse.joy/tokens", data={"csrf_token": t, "name": "script"})
    token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)
    assert accounts.user_for_token(appliance.index.accounts, token).username == "nurse.joy"
    [row] = rows(appliance.index, "ApiToken", prefix=token[:12])
    assert row.token_hash != token and token not in row.token_hash
    admin_client.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": t})
    assert accounts.user_for_token(appliance.index.accounts, token) is None

    appliance.audit.flush()
    actions = [e.action for e in appliance.audit.query(actor="admin", newest_first=False)]
    for wanted in ("user.create", "user.role", "user.password", "user.disable", "user.enable", "token.create",
                   "token.revoke"):
        assert wanted in actions


@pytest.fixture
def peers(appliance):
    assert appliance.peers is not None, "the peer registry is built by appliance.app.build"
    appliance.peers.timeout = 2
    return appliance.peers


def test_peers_add_edit_echo_remove(appliance, peers, admin_client):
    t = page_csrf(admin_client, "/admin/peers")
    r = admin_client.post("/admin/peers", data={"csrf_token": t, "ae_title": "CT1", "host": "127.0.0.1", "port": "9",
                                                "description": "CT", "can_store": "on"}, follow_redirects=True)
    assert "Added CT1" in r.text and "127.0.0.1:9" in r.text
    r = admin_client.post("/admin/peers", data={"csrf_token": t, "ae_title": "CT1", "host": "h", "port": "1"},
                          follow_redirects=True)
    assert "already registered" in r.text
    assert "value=\"127.0.0.1\"" in admin_client.get("/admin/peers/CT1/edit").text
    admin_client.post("/admin/peers/CT1", data={"csrf_token": t, "host": "127.0.0.1", "port": "1"})
    assert peers.get("CT1").port == 1 and not peers.get("CT1").can_query
    r = admin_client.post("/admin/peers/CT1/echo", data={"csrf_token": t}, follow_redirects=True)
    assert "Echo failed" in r.text  # nothing listens on port 1
    admin_client.post("/admin/peers/CT1/delete", data={"csrf_token": t})
    assert peers.get("CT1") is None
    appliance.audit.flush()
    assert {"peer.add", "peer.update", "dicom.echo", "peer.remove"} <= {e.action for e in appliance.audit.query()}


def test_worklist_add_edit_delete(appliance, admin_client):
    t = page_csrf(admin_client, "/admin/worklist")
    r = admin_client.post("/admin/worklist", data={
        "csrf_token": t, "patient_name": "Doe, Jane", "patient_id": "WL1", "scheduled_date": "2031-05-01",
        "scheduled_time": "09:30", "modality": "us", "step_description": "Abdomen"}, follow_redirects=True)
    assert "Added the worklist entry" in r.text
    item = appliance.worklist.list(patient_id="WL1")[0]
    assert item.patient_name == "Doe^Jane" and item.modality == "US" and item.scheduled_date == "20310501"
    page = admin_client.get("/admin/worklist?date=2031-05-01").text
    assert "Doe Jane" in page and "Abdomen" in page
    admin_client.post(f"/admin/worklist/{item.id}", data={
        "csrf_token": t, "patient_name": "Doe^Jane", "patient_id": "WL1", "scheduled_date": "2031-05-02",
        "modality": "US", "status": "COMPLETED"})
    assert appliance.worklist.get(item.id).status == "COMPLETED"
    admin_client.post(f"/admin/worklist/{item.id}/delete", data={"csrf_token": t})
    assert appliance.worklist.get(item.id) is None
    appliance.audit.flush()
    entries = list(appliance.audit.query(action="worklist"))
    assert len(entries) == 3 and all(e.patient_id == "WL1" for e in entries)


def _audit_table(html: str) -> str:
    return html[html.index('<table class="audit">'):]


def test_audit_filter_csv_and_tamper_detection(appliance, admin_client):
    log = appliance.audit
    log.record("study.view", "drwho", address="10.0.0.9", patient_id="P1", study_uid="1.2.3", detail="viewer")
    log.record("study.export", "drwho", patient_id="P1", study_uid="1.2.3", detail='=HYPERLINK("x")')
    log.flush()
    page = _audit_table(admin_client.get("/admin/audit?actor=drwho").text)
    assert "study.view" in page and "study.export" in page and "login.ok" not in page
    page = _audit_table(admin_client.get("/admin/audit?action=study.view").text)
    assert "study.export" not in page
    csv_text = admin_client.get("/admin/audit.csv?patient_id=P1").text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,at,actor,action") and len(lines) == 3
    assert "'=HYPERLINK" in csv_text  # defused for spreadsheets
    assert "Audit log intact" in admin_client.get("/admin/audit?verify=1").text
    assert log.verify().ok

    # The table refuses edits through SQL...
    from peewee import IntegrityError, OperationalError
    with pytest.raises((IntegrityError, OperationalError)):
        appliance.index.writer.run(lambda: appliance.index.db.execute_sql(
            "UPDATE audit_entry SET actor = 'someone' WHERE action = 'study.view'"))
    # ...and an edit made around the triggers breaks the chain.
    db = appliance.index.db
    on_table = ' ON "audit_entry"' if appliance.config.index.url else ""  # PostgreSQL names the table
    db.execute_sql('DROP TRIGGER "audit_entry_no_update"' + on_table)
    db.execute_sql("UPDATE audit_entry SET actor = 'someone' WHERE action = 'study.view'")
    result = log.verify()
    assert not result.ok and "altered" in result.message
    assert "TAMPERED" in admin_client.get("/admin/audit?verify=1").text


def test_audit_chain_detects_deleted_entry(appliance):
    for i in range(5):
        appliance.audit.record("test.entry", "system", detail=str(i))
    appliance.audit.flush()
    assert appliance.audit.verify().checked == 5
    on_table = ' ON "audit_entry"' if appliance.config.index.url else ""  # PostgreSQL names the table
    appliance.index.db.execute_sql('DROP TRIGGER "audit_entry_no_delete"' + on_table)
    appliance.index.db.execute_sql("DELETE FROM audit_entry WHERE id = 3")
    result = appliance.audit.verify()
    assert not result.ok and result.first_bad_id == 4


def test_settings_page_edits_file_and_refuses_others(appliance, admin_client):
    t = page_csrf(admin_client, "/admin/settings")
    page = admin_client.get("/admin/settings").text
    assert "ae_title" in page and "metrics_token" in page
    r = admin_client.post("/admin/settings", data={"csrf_token": t, "section": "backup", "key": "window",
                                                   "value": "22:00-04:00"}, follow_redirects=True)
    assert "Restart the appliance" in r.text
    text = appliance.config.config_path.read_text()
    assert 'window = "22:00-04:00"' in text and "# Daily time window" in text  # comments kept
    from appliance.config import load
    assert load(appliance.config.data_dir, env={}).backup.window == "22:00-04:00"
    r = admin_client.post("/admin/settings", data={"csrf_token": t, "section": "http", "key": "session_idle_minutes",
                                                   "value": "soon"}, follow_redirects=True)
    assert "expected a int" in r.text
    r = admin_client.post("/admin/settings", data={"csrf_token": t, "section": "dicom", "key": "allowed_callers",
                                                   "value": "CT1, US1@10.0.0.5"}, follow_redirects=True)
    assert load(appliance.config.data_dir, env={}).dicom.allowed_callers == ["CT1", "US1@10.0.0.5"]
    assert admin_client.post("/admin/settings", data={"csrf_token": t, "section": "http", "key": "port",
                                                      "value": "1"}).status_code == 400
    appliance.audit.flush()
    assert len(appliance.audit.query(action="config.change")) == 2


def test_dashboard_shows_counts_sources_and_store_audit(appliance, admin_client):
    study_uid = None
    for i in range(3):
        ds = make_instance("CT", patient_id="DASH1", patient_name="DASH^BOARD", study_uid=study_uid,
                           study_description="Head")
        study_uid = ds.StudyInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        appliance.ingestor.store_bytes(buf.getvalue(), Origin("dicom", "CT_ROOM@10.1.2.3"))
    page = admin_client.get("/").text
    assert "DASH BOARD" in page and "CT_ROOM (10.1.2.3)" in page and "Head" in page
    assert re.search(r"1\s*<small>study</small>", page) and "1 patient ·" in page and "3 images" in page
    assert re.search(r"CT_ROOM \(10.1.2.3\)</span><span class=\"badge\">3 images", page)  # the last hour
    appliance.audit.flush()
    entries = list(appliance.audit.query(action="dicom.store"))
    # not serving: each store is written at once (aggregation runs in the service thread)
    assert sum(int(e.detail.split()[0]) for e in entries) == 3
    assert {e.actor for e in entries} == {"dicom:CT_ROOM"} and entries[0].patient_id == "DASH1"


def test_store_audit_is_aggregated_while_serving(appliance):
    log = appliance.audit
    log.store_quiet = 3600
    log.start()
    try:
        study_uid = None
        for _ in range(4):
            ds = make_instance("CT", study_uid=study_uid)
            study_uid = ds.StudyInstanceUID
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            appliance.ingestor.store_bytes(buf.getvalue(), Origin("dicom", "US1@10.0.0.7"))
    finally:
        log.stop()  # flushes the batch
    log.flush()
    entries = list(log.query(action="dicom.store"))
    assert len(entries) == 1 and entries[0].detail == "4 instances stored" and entries[0].address == "10.0.0.7"


def test_healthz_has_no_patient_data(appliance, client):
    r = client.get("/healthz")
    body = r.get_json()
    assert set(body["checks"]) == {"process", "index", "archive", "disk", "dicom"}
    assert body["checks"]["index"]["ok"] and body["checks"]["archive"]["ok"]
    assert not body["checks"]["dicom"]["ok"] and r.status_code == 503  # the listener is not started here


def test_metrics_access_and_format(appliance, flask_app, monkeypatch):
    c = flask_app.test_client()
    r = c.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    for name in ("pacs_instances_received_total", "pacs_associations_total", "pacs_disk_free_bytes",
                 "pacs_log_messages_total", "pacs_instances"):
        assert f"# TYPE {name} " in r.text
    assert c.get("/metrics", environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 403

    from appliance.config import load
    from web import create_app
    appliance.config = load(appliance.config.data_dir, env={"PACS_HTTP_METRICS_TOKEN": "s3cret-token",
                                                            "PACS_HTTP_METRICS_ALLOWED": "192.168.0.0/16"})
    c = create_app(appliance, {"TESTING": True}).test_client()
    assert c.get("/metrics").status_code == 403  # 127.0.0.1 is no longer listed
    assert c.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.4.5"}).status_code == 200
    assert c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_session_expires_when_idle(appliance, flask_app, client):
    import datetime
    login(client)
    assert client.get("/").status_code == 200
    past = datetime.datetime.utcnow() - datetime.timedelta(hours=1)
    [session] = rows(appliance.index, "WebSession")
    appliance.index.accounts.touch_session(session.id, past)
    assert client.get("/").status_code == 302


def test_cli_user_commands(appliance, tmp_path):
    from appliance.cli import main
    pw = tmp_path / "pw"
    pw.write_text("cli-password-123\n")
    data = str(appliance.config.data_dir)
    run = CliRunner().invoke
    r = run(main, ["user", "add", "cli.user", "--role", "technologist", "--password-file", str(pw), "--data", data])
    assert r.exit_code == 0, r.output
    assert accounts.authenticate(appliance.index.accounts, "cli.user", "cli-password-123").role == "technologist"
    r = run(main, ["user", "list", "--data", data])
    assert "cli.user" in r.output and "technologist" in r.output
    r = run(main, ["user", "passwd", "cli.user", "--data", data], input="new-cli-password\nnew-cli-password\n")
    assert r.exit_code == 0 and accounts.authenticate(appliance.index.accounts, "cli.user", "new-cli-password")
    r = run(main, ["user", "token", "cli.user", "--name", "backup script", "--data", data])
    owner = accounts.user_for_token(appliance.index.accounts, r.output.strip())
    assert r.exit_code == 0 and owner.username == "cli.user"
    r = run(main, ["user", "tokens", "cli.user", "--data", data])
    token_id = r.output.split()[0]
    assert r.exit_code == 0 and "backup script" in r.output
    r = run(main, ["user", "token", "cli.user", "--data", data])
    second = r.output.strip()
    r = run(main, ["user", "revoke-token", token_id, "--data", data])
    assert r.exit_code == 0 and accounts.user_for_token(appliance.index.accounts, second) is not None
    assert "backup script" not in run(main, ["user", "tokens", "cli.user", "--data", data]).output
    r = run(main, ["user", "disable", "cli.user", "--data", data])
    assert r.exit_code == 0 and accounts.authenticate(appliance.index.accounts, "cli.user", "new-cli-password") is None
    r = run(main, ["user", "disable", "admin", "--data", data])
    assert r.exit_code != 0 and "last active admin" in r.output
    r = run(main, ["user", "add", "x", "--password-file", str(pw), "--data", data])
    assert r.exit_code != 0 and "user names" in r.output
    appliance.audit.flush()
    assert {"user.create", "user.password", "token.create", "user.disable"} <= {
        e.action for e in appliance.audit.query(action="") if e.actor.startswith("cli")}


def test_dashboard_hides_operations_panels_from_clinicians(clinician_client, admin_client):
    assert "Recent problems" not in clinician_client.get("/").text
    assert "Recent problems" in admin_client.get("/").text


def test_audit_date_filter_uses_local_days(appliance, admin_client):
    import datetime
    appliance.audit.record("test.today", "system")
    appliance.audit.flush()
    today = datetime.date.today().isoformat()
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    assert "test.today" in _audit_table(admin_client.get(f"/admin/audit?since={today}&until={today}").text)
    assert "test.today" not in _audit_table(admin_client.get(f"/admin/audit?since={tomorrow}").text)


def test_dashboard_survives_a_broken_backup_panel(appliance, admin_client):
    class Broken:
        def status(self):
            raise RuntimeError("target unreachable")

    appliance.backup = Broken()
    r = admin_client.get("/")
    assert r.status_code == 200 and "Backup status unavailable: target unreachable" in r.text


def test_metrics_report_backup_age(appliance, client):
    class Backup:
        def status(self):
            return {"configured": True, "last_success_age_hours": 2.0, "warning": False}

    appliance.backup = Backup()
    text = client.get("/metrics").text
    assert "pacs_backup_age_seconds 7200" in text and "pacs_backup_warning 0" in text
