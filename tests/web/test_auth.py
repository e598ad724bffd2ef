"""Login, sessions, lockout, CSRF, API credentials and security headers, through Flask's test client."""
import base64

from web_support import USER_PASSWORD, csrf_from, login, make_user

from helpers import ADMIN_PASSWORD
from indexkit import rows

from appliance.records import accounts


def test_anonymous_page_redirects_to_login(client):
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/")


def test_login_sets_hardened_cookie_and_rotates_session(client):
    client.get("/login")
    before = client.get_cookie("pacs_session")
    r = login(client)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    after = client.get_cookie("pacs_session")
    assert before is not None and after.value != before.value
    assert client.get("/").status_code == 200


def test_session_fixation_old_cookie_stops_working(flask_app, client):
    login(client)
    stolen = client.get_cookie("pacs_session").value
    token = csrf_from(client.get("/").text)
    client.post("/logout", data={"csrf_token": token})
    thief = flask_app.test_client()
    thief.set_cookie("pacs_session", stolen)
    assert thief.get("/").status_code == 302


def test_wrong_password_is_refused_and_audited(appliance, client):
    r = login(client, password="wrong-password-x")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    appliance.audit.flush()
    assert [e.action for e in appliance.audit.query(action="login")] == ["login.failed"]


def test_lockout_after_max_failures(appliance, client):
    for _ in range(5):
        assert login(client, password="wrong-password-x").status_code == 401
    r = login(client)  # the right password is refused while locked out
    assert r.status_code == 429 and "Too many failed logins" in r.text
    appliance.audit.flush()
    assert len(appliance.audit.query(action="login.locked")) == 1


def test_post_without_csrf_is_rejected(admin_client):
    r = admin_client.post("/logout")
    assert r.status_code == 400 and "CSRF" in r.text
    r = admin_client.post("/logout", data={"csrf_token": "forged"})
    assert r.status_code == 400
    assert admin_client.get("/").status_code == 200  # still logged in


def test_login_form_without_csrf_is_rejected(client):
    r = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 400


def test_open_redirect_is_refused(client):
    token = csrf_from(client.get("/login").text)
    r = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token,
                                    "next": "//evil.example/"})
    assert r.headers["Location"] == "/"


def test_disabled_user_cannot_log_in_and_loses_session(appliance, flask_app):
    make_user(appliance, "nurse", "technologist")
    c = flask_app.test_client()
    assert login(c, "nurse", USER_PASSWORD).status_code == 302
    appliance.index.writer.run(lambda: accounts.set_disabled(appliance.index.accounts, "nurse"))
    assert c.get("/").status_code == 302
    assert login(c, "nurse", USER_PASSWORD).status_code == 401


def test_security_headers(admin_client):
    h = admin_client.get("/").headers
    assert "script-src 'self'" in h["Content-Security-Policy"] and "unsafe-inline" not in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY" and h["Cache-Control"] == "no-store"
    assert h["X-Content-Type-Options"] == "nosniff"


def test_secure_cookie_over_https(client):
    token = csrf_from(client.get("/login", base_url="https://localhost").text)
    r = client.post("/login", base_url="https://localhost",
                    data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    assert "Secure" in r.headers["Set-Cookie"]


def _api_app(flask_app):
    from web.auth import api_login_required, current_user

    @flask_app.post("/_test/api")
    @api_login_required("admin", "clinician")
    def _api():
        return {"user": current_user().username}

    return flask_app


def test_api_basic_bearer_and_session(appliance, flask_app):
    app = _api_app(flask_app)
    c = app.test_client()
    assert c.post("/_test/api").status_code == 401
    assert "Basic" in c.post("/_test/api").headers["WWW-Authenticate"]
    basic = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    r = c.post("/_test/api", headers={"Authorization": f"Basic {basic}"})  # no CSRF needed with Basic
    assert r.status_code == 200 and r.json["user"] == "admin"
    bad = base64.b64encode(b"admin:nope-nope-nope").decode()
    assert c.post("/_test/api", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    token, _ = appliance.index.writer.run(lambda: accounts.create_api_token(appliance.index.accounts, "admin", "test"))
    r = c.post("/_test/api", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json["user"] == "admin"
    assert c.post("/_test/api", headers={"Authorization": "Bearer pacs_wrong"}).status_code == 401
    # a session cookie works too, but then a state-changing call needs the CSRF token
    login(c)
    assert c.post("/_test/api").status_code == 400
    make_user(appliance, "tech", "technologist")
    tech = base64.b64encode(f"tech:{USER_PASSWORD}".encode()).decode()
    assert c.post("/_test/api", headers={"Authorization": f"Basic {tech}"}).status_code == 403


def test_revoked_token_is_refused(appliance, flask_app):
    app = _api_app(flask_app)
    c = app.test_client()
    repo = appliance.index.accounts
    token, row = appliance.index.writer.run(lambda: accounts.create_api_token(repo, "admin", "x"))
    appliance.index.writer.run(lambda: accounts.revoke_api_token(repo, row.id))
    assert c.post("/_test/api", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_logging_in_again_rotates_the_session_id(appliance, flask_app, client):
    login(client)
    first = client.get_cookie("pacs_session").value
    first_rows = {r.sid_hash for r in rows(appliance.index, "WebSession")}
    token = csrf_from(client.get("/admin/users").text)
    r = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    assert r.status_code == 302
    now = {r.sid_hash for r in rows(appliance.index, "WebSession")}
    assert len(now) == 1 and now.isdisjoint(first_rows)  # a new server-side id; the old one is gone
    replay = flask_app.test_client()
    replay.set_cookie("pacs_session", first)
    assert replay.get("/").status_code == 302


def test_secure_cookie_when_configured(appliance):
    from web import create_app

    c = create_app(appliance, {"TESTING": True, "SESSION_COOKIE_SECURE": True}).test_client()
    r = login(c)
    assert "Secure" in r.headers["Set-Cookie"]


def test_session_table_holds_only_hashes(appliance, client):
    login(client)
    cookie = client.get_cookie("pacs_session").value
    [row] = rows(appliance.index, "WebSession")
    assert row.sid_hash not in cookie


def test_hsts_only_over_https(client):
    assert "Strict-Transport-Security" not in client.get("/login").headers
    assert "max-age" in client.get("/login", base_url="https://localhost").headers["Strict-Transport-Security"]


def test_admin_post_without_csrf_changes_nothing(appliance, admin_client):
    r = admin_client.post("/admin/users", data={"username": "sneaky", "password": USER_PASSWORD, "role": "admin"})
    assert r.status_code == 400
    assert appliance.index.accounts.user("sneaky") is None


def test_lockout_is_temporary_and_per_name_and_address():
    from web.sessions import LoginThrottle

    now = [1000.0]
    t = LoginThrottle(max_failures=3, lockout_minutes=15, clock=lambda: now[0])
    t.succeeded("alice", "10.0.0.9")  # alice's own workstation
    for _ in range(3):
        assert t.locked_for("alice", "10.0.0.1") == 0
        t.failed("alice", "10.0.0.1")
    assert t.locked_for("alice", "10.0.0.1") > 0  # the guesser's address may not try alice again
    assert t.locked_for("alice", "10.0.0.9") == 0  # alice's own address may
    assert 0 < t.locked_for("alice", "10.0.0.2") <= 1  # a new address waits a second (back-off, not a lock)
    assert t.locked_for("bob", "10.0.0.1") == 0
    for n in range(3, 12):  # spraying names from one address locks that address
        t.failed(f"user{n}", "10.0.0.1")
    assert t.locked_for("bob", "10.0.0.1") > 0
    assert t.locked_for("bob", "10.0.0.2") == 0
    now[0] += 15 * 60 + 1
    assert t.locked_for("alice", "10.0.0.1") == 0 and t.locked_for("bob", "10.0.0.1") == 0


def test_backoff_for_a_name_attacked_from_many_addresses_is_capped():
    from web.sessions import LoginThrottle

    now = [1000.0]
    t = LoginThrottle(max_failures=5, lockout_minutes=15, clock=lambda: now[0], max_backoff=30)
    for n in range(40):
        t.failed("alice", f"10.1.0.{n}")
        now[0] += 0.1
    assert 29 < t.locked_for("alice", "10.2.0.1") <= 30  # at most one guess every 30 s from new addresses
    now[0] += 30
    assert t.locked_for("alice", "10.2.0.1") == 0


def test_authorization_header_cannot_skip_csrf_on_pages(appliance, admin_client):
    r = admin_client.post("/admin/users", headers={"Authorization": "Bearer x"},
                          data={"username": "sneaky2", "password": USER_PASSWORD, "role": "admin"})
    assert r.status_code == 400
    assert appliance.index.accounts.user("sneaky2") is None


def test_clinic_staff_land_on_the_study_list(appliance, flask_app):
    make_user(appliance, "nurse2", "clinician")
    c = flask_app.test_client()
    r = login(c, "nurse2", USER_PASSWORD)
    expected = "/studies" if "viewer.studies" in flask_app.view_functions else "/"
    assert r.headers["Location"].startswith(expected)
    assert login(flask_app.test_client()).headers["Location"] == "/"  # admins: the dashboard
