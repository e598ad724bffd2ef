"""Every form a user can post, and the JSON APIs, fed hypothesis-generated input through Flask's test client.

The contract, checked on each example:
- never a 500 (an exception escaping a view fails the test: the test client propagates it),
  never a stack trace in the body;
- a refused change says which field is wrong (the flashed error names it) and changes nothing
  (users, peers, worklist, the config file are compared before and after);
- an accepted settings change leaves a config the appliance can start with;
- a POST without the session's CSRF token is refused with 400 and changes nothing;
- the query string of every GET route (pages, DICOMweb, health) gets an answer below 500.
Examples are derandomized with a fixed seed and few per form, so the module runs in seconds.
"""
from __future__ import annotations

import re
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from helpers import ADMIN_PASSWORD, init_data_dir

from appliance.app import build
from appliance.backup.schedule import parse_window
from appliance.config import load
from appliance.records import accounts
from indexkit import rows

SEED = 20261123
FUZZ = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
EXECUTIONS: dict[str, int] = {}

# Printable and nasty text, no surrogates (a browser cannot send them in UTF-8).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
NASTY = st.sampled_from(["", " ", "\0", "\n", "-1", "0", "65536", "99999999999999999999", "1e9", "nan", "٣",
                         "../../etc/passwd", "<script>x</script>", "a" * 5000, "1" * 5000, "'; DROP TABLE user;--",
                         "\u202e", "\\", '"', "CT\\MR", "*", "2026-02-30", "20261301", "25:61", "00:00-24:00"])
FIELD = st.one_of(TEXT, NASTY)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from web import create_app

    data = init_data_dir(tmp_path_factory.mktemp("forms") / "data")
    appliance = build(load(data, env={}), with_web=False)
    flask_app = create_app(appliance, {"TESTING": True})
    yield flask_app
    appliance.index.close()
    print(f"form fuzz executions: {EXECUTIONS}")


@pytest.fixture(scope="module")
def admin(app):
    c = app.test_client()
    c.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf(c, "/login")})
    assert c.get("/admin/users").status_code == 200
    return c


def csrf(client, path: str = "/admin/users") -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert m, f"no CSRF token on {path}"
    return m.group(1)


def appliance_of(app):
    return app.extensions["appliance"]


def count(name: str) -> None:
    EXECUTIONS[name] = EXECUTIONS.get(name, 0) + 1


def post(client, path: str, data: dict) -> tuple[int, str, str]:
    """POST, follow one redirect; return (status of the POST, flash category or '', flash text)."""
    try:
        r = client.post(path, data=data)
    except Exception as exc:  # noqa: BLE001 - in production this is a 500
        pytest.fail(f"POST {path} {data!r:.300} raised {exc.__class__.__name__}: {exc}")
    clean(r, path, data)
    body = r.text
    if r.status_code == 302:
        page = client.get(r.headers["Location"])
        clean(page, r.headers["Location"], data)
        body = page.text
    m = re.search(r'class="alert alert-(\w+)" role="status">([^<]*)<', body)
    return r.status_code, (m.group(1) if m else ""), (m.group(2) if m else "")


def clean(r, path: str, data) -> None:
    assert r.status_code < 500, f"{path} answered {r.status_code} to {data!r:.300}"
    assert "Traceback" not in r.text and 'File "' not in r.text, f"{path} showed a stack trace"


def mentions(message: str, *words: str) -> bool:
    low = message.lower()
    return any(w.lower() in low for w in words)


def state(app) -> tuple:
    """Everything a form could change, compared before and after a refused post."""
    a = appliance_of(app)
    users = tuple((u.username, u.role, u.password_hash, u.disabled) for u in a.index.accounts.users())
    peers = tuple(tuple(vars(p).items()) for p in a.index.peers.list())
    worklist = tuple(tuple((k, v) for k, v in vars(w).items() if k != "updated_at")
                     for w in sorted(a.index.worklist.search({}, open_only=False), key=lambda w: w.id))
    tokens = len(rows(a.index, "ApiToken"))
    return users, peers, worklist, tokens, a.config.config_path.read_bytes()


def refused_cleanly(app, before, status, category, message, *field_words):
    assert category == "error" or status == 400, (status, category, message)
    if category == "error":
        assert mentions(message, *field_words), f"the error does not name the field ({field_words}): {message!r}"
    assert state(app) == before, "a refused form changed something"


# --- login -----------------------------------------------------------------------------------

@seed(SEED)
@FUZZ
@given(username=FIELD, password=FIELD)
def test_login_form(app, username, password):
    count("login")
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = "192.0.2.7"  # failures lock this address out, not the admin's
    token = csrf(c, "/login")
    r = c.post("/login", data={"username": username, "password": password, "csrf_token": token})
    clean(r, "/login", username)
    assert r.status_code in (401, 429), r.status_code  # no random input logs in


# --- users -----------------------------------------------------------------------------------

ROLE = st.one_of(st.sampled_from(accounts.ROLES), FIELD)
USERNAME = st.one_of(st.from_regex(r"\A[A-Za-z0-9._-]{2,20}\Z"), FIELD)
PASSWORD = st.one_of(st.text(min_size=10, max_size=40), FIELD)


@seed(SEED)
@FUZZ
@given(username=USERNAME, password=PASSWORD, role=ROLE)
def test_user_add_form(app, admin, username, password, role):
    count("user add")
    before = state(app)
    status, category, message = post(admin, "/admin/users", {"csrf_token": csrf(admin), "username": username,
                                                             "password": password, "role": role})
    name = username.strip()
    valid = (accounts.USERNAME.fullmatch(name) and len(password) >= accounts.MIN_PASSWORD
             and role in accounts.ROLES and name not in [u[0] for u in before[0]])
    if valid:
        assert category == "ok", message
        user = appliance_of(app).index.accounts.user(name)
        assert user.role == role and accounts.verify_password(user.password_hash, password)
    else:
        refused_cleanly(app, before, status, category, message, "user", "password", "role")


@pytest.fixture(scope="module")
def victim(app):
    index = appliance_of(app).index
    index.writer.run(lambda: accounts.create_user(index.accounts, "victim", "a-long-enough-password", "clinician"))
    return "victim"


@seed(SEED)
@FUZZ
@given(password=PASSWORD, role=ROLE)
def test_user_password_and_role_forms(app, admin, victim, password, role):
    count("user password/role")
    before = state(app)
    status, category, message = post(admin, f"/admin/users/{victim}/password",
                                     {"csrf_token": csrf(admin), "password": password})
    if len(password) >= accounts.MIN_PASSWORD:
        assert category == "ok", message
        user = appliance_of(app).index.accounts.user(victim)
        assert accounts.verify_password(user.password_hash, password)
    else:
        refused_cleanly(app, before, status, category, message, "password")
    before = state(app)
    status, category, message = post(admin, f"/admin/users/{victim}/role", {"csrf_token": csrf(admin), "role": role})
    if role in accounts.ROLES:
        assert category == "ok", message
    else:
        refused_cleanly(app, before, status, category, message, "role")


@seed(SEED)
@FUZZ
@given(username=FIELD, name=FIELD)
def test_user_routes_with_odd_names(app, admin, username, name):
    """Unknown or odd user names in the URL (password, role, tokens): a clear refusal, nothing changed."""
    count("user routes")
    quoted = urllib.parse.quote(username, safe="")
    if not quoted or username in [u.username for u in appliance_of(app).index.accounts.users()]:
        return
    before = state(app)
    for path, data in ((f"/admin/users/{quoted}/password", {"password": "a-long-enough-password"}),
                       (f"/admin/users/{quoted}/role", {"role": "clinician"}),
                       (f"/admin/users/{quoted}/disable", {}),
                       (f"/admin/users/{quoted}/tokens", {"name": name})):
        status, category, message = post(admin, path, {"csrf_token": csrf(admin), **data})
        assert status in (302, 404, 405), (path, status)
        if status == 302:
            refused_cleanly(app, before, status, category, message, "user")


@seed(SEED)
@FUZZ
@given(name=FIELD)
def test_token_form(app, admin, victim, name):
    count("api token")
    r = admin.post(f"/admin/users/{victim}/tokens", data={"csrf_token": csrf(admin), "name": name})
    clean(r, "tokens", name)
    assert r.status_code in (200, 302)


# --- peers -----------------------------------------------------------------------------------

AE = st.one_of(st.from_regex(r"\A[A-Z0-9_]{1,16}\Z"), FIELD)
PORT = st.one_of(st.integers(-5, 70000).map(str), FIELD)
HOST = st.one_of(st.sampled_from(["127.0.0.1", "modality.local", "::1", "10.0.0.5"]), FIELD)


def peer_form(host, port, description, flags) -> dict:
    form = {"host": host, "port": port, "description": description}
    form.update({f: "on" for f in flags})
    return form


FLAGS = st.lists(st.sampled_from(["can_store", "can_query", "can_retrieve", "can_receive_moves"]), unique=True)


@seed(SEED)
@FUZZ
@given(ae=AE, host=HOST, port=PORT, description=FIELD, flags=FLAGS)
def test_peer_add_form(app, admin, ae, host, port, description, flags):
    count("peer add")
    before = state(app)
    status, category, message = post(admin, "/admin/peers", {"csrf_token": csrf(admin, "/admin/peers"), "ae_title": ae,
                                                              **peer_form(host, port, description, flags)})
    if category == "ok":
        peer = appliance_of(app).peers.get(ae.strip())
        assert 1 <= peer.port <= 65535 and peer.host == host.strip()
        assert all(getattr(peer, f) == (f in flags) for f in ("can_store", "can_query", "can_retrieve"))
    else:
        refused_cleanly(app, before, status, category, message, "AE title", "host", "port", "description")


@seed(SEED)
@FUZZ
@given(host=HOST, port=PORT, description=FIELD, flags=FLAGS)
def test_peer_update_form(app, admin, host, port, description, flags):
    count("peer update")
    if appliance_of(app).peers.get("FUZZPEER") is None:
        appliance_of(app).peers.add("FUZZPEER", host="127.0.0.1", port=104)
    before = state(app)
    status, category, message = post(admin, "/admin/peers/FUZZPEER", {"csrf_token": csrf(admin, "/admin/peers"),
                                                                       **peer_form(host, port, description, flags)})
    if category == "ok":
        peer = appliance_of(app).peers.get("FUZZPEER")
        assert 1 <= peer.port <= 65535 and peer.host == host.strip()
    else:
        refused_cleanly(app, before, status, category, message, "host", "port", "description")


# --- worklist --------------------------------------------------------------------------------

WL_DATE = st.one_of(st.dates().map(lambda d: d.isoformat()), st.dates().map(lambda d: d.strftime("%Y%m%d")), FIELD)
WL_TIME = st.one_of(st.times().map(lambda t: t.strftime("%H:%M")), FIELD)
WORKLIST = st.fixed_dictionaries({
    "patient_name": FIELD, "patient_id": st.one_of(st.from_regex(r"\A[A-Z0-9]{1,12}\Z"), FIELD),
    "birth_date": st.one_of(st.just(""), WL_DATE), "sex": st.one_of(st.sampled_from(["", "F", "M", "O"]), FIELD),
    "accession": FIELD, "modality": st.one_of(st.sampled_from(["CT", "DX", "US"]), FIELD), "station_ae": AE,
    "scheduled_date": WL_DATE, "scheduled_time": st.one_of(st.just(""), WL_TIME), "step_description": FIELD,
    "requested_procedure_description": FIELD, "referring_physician": FIELD, "performing_physician": FIELD,
})
WL_WORDS = ("patient", "modality", "scheduled date", "birth date", "scheduled time", "sex", "accession", "station",
            "description", "physician", "status")


@seed(SEED)
@FUZZ
@given(values=WORKLIST, status=st.one_of(st.sampled_from(["", "SCHEDULED", "completed"]), FIELD))
def test_worklist_forms(app, admin, values, status):
    count("worklist add/update")
    before = state(app)
    code, category, message = post(admin, "/admin/worklist", {"csrf_token": csrf(admin, "/admin/worklist"), **values})
    if category != "ok":
        refused_cleanly(app, before, code, category, message, *WL_WORDS)
        return
    item = max(appliance_of(app).index.worklist.search({}, open_only=False), key=lambda w: w.id)
    before = state(app)
    code, category, message = post(admin, f"/admin/worklist/{item.id}",
                                   {"csrf_token": csrf(admin, "/admin/worklist"), **values, "status": status})
    if category != "ok":
        refused_cleanly(app, before, code, category, message, *WL_WORDS)


# --- settings --------------------------------------------------------------------------------

def startable(app) -> None:
    """The saved config must let the appliance start: it loads, and the values parts check at start parse."""
    cfg = load(appliance_of(app).config.data_dir, env={})
    parse_window(cfg.backup.window)
    assert cfg.http.session_idle_minutes > 0, "a session idle time of 0 or less locks everyone out"
    assert cfg.backup.warn_after_hours >= 0
    assert cfg.log.level in ("DEBUG", "INFO", "WARNING", "ERROR")


@seed(SEED)
@settings(max_examples=40, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(which=st.sampled_from(["allowed_callers", "window", "warn_after_hours", "session_idle_minutes", "level",
                              "other"]),
       value=st.one_of(FIELD, st.integers(-10, 10**6).map(str), st.sampled_from(
           ["01:00-05:00", "23:00-01:00", "PACS@10.0.0.5\nCT1", "debug", "INFO"])))
def test_settings_form(app, admin, which, value):
    count("settings")
    section = {"allowed_callers": "dicom", "window": "backup", "warn_after_hours": "backup",
               "session_idle_minutes": "http", "level": "log", "other": "storage"}[which]
    key = "reserve_mb" if which == "other" else which
    before = state(app)
    status, category, message = post(admin, "/admin/settings", {"csrf_token": csrf(admin, "/admin/settings"),
                                                                 "section": section, "key": key, "value": value})
    if which == "other":
        assert status == 400 and state(app) == before  # not editable from the browser
        return
    if category == "ok":
        startable(app)
    else:
        refused_cleanly(app, before, status, category, message, key, key.replace("_", " "))


# --- CSRF ------------------------------------------------------------------------------------

FORMS = [("/admin/users", {"username": "csrfvictim", "password": "a-long-enough-password", "role": "admin"}),
         ("/admin/users/victim/password", {"password": "attacker-chosen-pw"}),
         ("/admin/users/victim/role", {"role": "admin"}),
         ("/admin/users/victim/disable", {}),
         ("/admin/users/victim/tokens", {"name": "stolen"}),
         ("/admin/peers", {"ae_title": "EVIL", "host": "10.6.6.6", "port": "104", "can_retrieve": "on"}),
         ("/admin/worklist", {"patient_id": "X", "modality": "CT", "scheduled_date": "2026-01-01"}),
         ("/admin/settings", {"section": "dicom", "key": "allowed_callers", "value": "EVIL"}),
         ("/logout", {})]


@seed(SEED)
@FUZZ
@given(form=st.sampled_from(FORMS), token=st.one_of(st.none(), st.just(""), TEXT))
def test_csrf_is_enforced_on_every_form(app, admin, victim, form, token):
    count("csrf")
    path, data = form
    before = state(app)
    body = dict(data)
    if token is not None:
        body["csrf_token"] = token
    r = admin.post(path, data=body)
    clean(r, path, body)
    assert r.status_code == 400 and "CSRF" in r.text, (path, r.status_code)
    assert state(app) == before
    assert admin.get("/admin/users").status_code == 200  # still logged in (the logout was refused too)


# --- JSON APIs (DICOMweb) ---------------------------------------------------------------------

QIDO_KEYS = st.sampled_from(["PatientName", "PatientID", "StudyDate", "StudyTime", "ModalitiesInStudy",
                             "StudyInstanceUID", "AccessionNumber", "limit", "offset", "includefield", "fuzzymatching",
                             "00100010", "0020000D", "bogus", "SeriesInstanceUID", "SOPInstanceUID"])


@seed(SEED)
@settings(max_examples=40, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(level=st.sampled_from(["/studies", "/series", "/instances", "/studies/1.2.3/series",
                              "/studies/1.2.3/series/4.5/instances"]),
       params=st.lists(st.tuples(QIDO_KEYS, FIELD), max_size=4),
       accept=st.sampled_from(["application/dicom+json", "application/json", "*/*", "text/html", "", "a/b;q=x"]))
def test_qido_json_queries(app, level, params, accept):
    count("QIDO-RS")
    c = app.test_client()
    query = urllib.parse.urlencode(params)
    try:
        r = c.get(f"/dicomweb{level}?{query}", headers={"Accept": accept},
                  auth=("admin", ADMIN_PASSWORD))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"QIDO {level}?{query} raised {exc.__class__.__name__}: {exc}")
    clean(r, level, query)
    assert r.status_code in (200, 204, 400, 406), (level, query, accept, r.status_code, r.text[:200])
    if r.status_code == 400:
        assert r.text.strip(), "a 400 without a reason"


@seed(SEED)
@FUZZ
@given(body=st.one_of(st.binary(max_size=300), TEXT.map(str.encode)),
       content_type=st.one_of(st.sampled_from([
           'multipart/related; type="application/dicom"; boundary=x',
           'multipart/related; type="application/dicom+json"; boundary=x', "application/dicom+json",
           "application/json", "multipart/related", ""]), TEXT))
def test_stow_odd_bodies(app, body, content_type):
    count("STOW-RS")
    c = app.test_client()
    before = state(app)
    try:
        r = c.post("/dicomweb/studies", data=body, headers={"Content-Type": content_type},
                   auth=("admin", ADMIN_PASSWORD))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"STOW {content_type!r} raised {exc.__class__.__name__}: {exc}")
    clean(r, "STOW", content_type)
    assert 400 <= r.status_code < 500, (content_type, r.status_code)
    assert state(app)[:4] == before[:4]


# --- query strings of every GET route ----------------------------------------------------------

# Every query parameter a view reads (request.args), and a few it does not.
QUERY_KEYS = st.sampled_from([
    "page", "next", "name", "patient_id", "accession", "modality", "dates", "from", "to", "id", "date", "edit",
    "actor", "action", "study_uid", "since", "until", "verify", "limit", "offset", "includefield",
    "fuzzymatching", "StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "ModalitiesInStudy", "accept",
    "window", "viewport", "quality", "requestType", "studyUID", "seriesUID", "objectUID", "contentType",
    "transferSyntax", "frameNumber", "windowCenter", "windowWidth", "rows", "columns", "imageQuality", "bogus"])
QUERY_VALUES = st.one_of(FIELD, st.sampled_from([
    "9" * 20, "9" * 30, "-" + "9" * 20, "\\", "\r\nX-Injected: 1", "/\r\n/evil", "9999-12-31", "0001-01-01",
    "2026-01-01", "1.2.3", "WADO", "application/dicom", "image/png", "1,1", "0,0", "10,10", "1" * 400]))


def _get_routes(app) -> list[str]:
    """A concrete URL for every GET route, its path parameters filled with real or plausible values."""
    values = {"study": "1.2.3", "series": "4.5", "instance": "6.7", "study_uid": "1.2.3", "sop_uid": "6.7",
              "frames": "1", "tag_path": "7FE00010", "username": "admin", "ae_title": "FUZZPEER", "path": "x",
              "filename": "app.css", "item_id": "1", "token_id": "1"}
    urls = set()
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:[^:<>]+:)?{arg}>", values.get(arg, "1"), url)
        urls.add(url)
    return sorted(urls)


@pytest.fixture(scope="module")
def get_routes(app):
    routes = _get_routes(app)
    assert len(routes) > 40 and "/admin/audit" in routes and "/dicomweb/studies" in routes
    return routes


@seed(SEED)
@settings(max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(index=st.integers(0, 10_000), params=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), min_size=1, max_size=4))
def test_every_get_route_query_string(app, admin, get_routes, index, params):
    """Odd query strings, as an admin (who may open every page): never a 500, never a stack trace."""
    count("GET query strings")
    path = get_routes[index % len(get_routes)]
    query = urllib.parse.urlencode(params)
    try:
        r = admin.get(f"{path}?{query}", headers={"Accept": "*/*"})
    except Exception as exc:  # noqa: BLE001 - in production this is a 500
        pytest.fail(f"GET {path}?{query} raised {exc.__class__.__name__}: {exc}")
    if path == "/healthz":  # 503 is its answer here (no DICOM listener in this app), not an error
        assert r.status_code in (200, 503) and "Traceback" not in r.text
        return
    clean(r, path, query)
    if r.status_code in (301, 302, 303, 307, 308):
        assert "\n" not in r.headers["Location"] and "\r" not in r.headers["Location"]


@pytest.mark.parametrize("url", [
    "/login?next=/%0d%0aX-Injected:%201",  # CR/LF in next=: the redirect raised
    "/studies?page=" + "9" * 20,  # the offset overflowed SQLite's integer
    "/dicomweb/studies?offset=" + "9" * 30,
    "/dicomweb/studies?limit=" + "9" * 30,
    "/dicomweb/studies?StudyInstanceUID=%5C",  # an empty UID list
    "/admin/worklist?date=abc",
    "/admin/worklist?edit=" + "9" * 30,
    "/admin/audit?page=" + "9" * 30,
    "/admin/audit?until=9999-12-31",  # the day after it overflowed
    "/admin/audit?since=0001-01-01",
    "/admin/audit.csv?until=9999-12-31",
])
def test_regression_odd_query_strings_get_a_4xx(app, admin, url):
    """Each of these answered 500 (issue 14, item 9)."""
    try:
        r = admin.get(url, headers={"Accept": "application/dicom+json"})
        if url.startswith("/login"):  # logged in: GET /login redirects to next=
            r2 = app.test_client().get(url)
            clean(r2, url, "")
    except Exception as exc:  # noqa: BLE001 - in production this is a 500
        pytest.fail(f"GET {url} raised {exc.__class__.__name__}: {exc}")
    clean(r, url, "")
    assert r.status_code < 500
    if "Location" in r.headers:
        assert "\n" not in r.headers["Location"]


def test_regression_login_refuses_a_next_with_control_characters(app):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = "192.0.2.8"
    r = c.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf(c, "/login"),
                               "next": "/studies\r\nSet-Cookie: x=1"})
    assert r.status_code == 302 and "\n" not in r.headers["Location"] and "Set-Cookie: x" not in r.headers["Location"]


# --- regressions found by the fuzzing above ----------------------------------------------------

def test_regression_csrf_token_with_non_ascii_is_refused_not_500(app, admin):
    """hmac.compare_digest raised TypeError on a non-ASCII str token: every form answered 500 to '\\x80'."""
    before = state(app)
    r = admin.post("/admin/users", data={"csrf_token": "\x80", "username": "x1", "password": "a" * 12,
                                         "role": "admin"})
    assert r.status_code == 400 and "CSRF" in r.text
    r = admin.post("/admin/users", data={"username": "x1"}, headers={"X-CSRF-Token": "é"})
    assert r.status_code == 400 and state(app) == before


@pytest.mark.parametrize("key,value,field", [
    ("window", "0", "window"),  # saved, then `serve` refused to start: the scheduler could not parse it
    ("window", "25:00-26:00", "window"),
    ("session_idle_minutes", "0", "session_idle_minutes"),  # every session would end at once
    ("session_idle_minutes", "-5", "session_idle_minutes"),
    ("warn_after_hours", "-1", "warn_after_hours"),
])
def test_regression_settings_refuse_values_the_appliance_cannot_start_with(app, admin, key, value, field):
    section = {"window": "backup", "warn_after_hours": "backup", "session_idle_minutes": "http"}[key]
    before = state(app)
    status, category, message = post(admin, "/admin/settings", {"csrf_token": csrf(admin, "/admin/settings"),
                                                                 "section": section, "key": key, "value": value})
    assert category == "error" and field in message, message
    assert state(app) == before
    startable(app)


def test_regression_settings_control_characters_name_the_field(app, admin):
    """A backspace in allowed_callers made invalid TOML; the error named the file, not the field."""
    before = state(app)
    status, category, message = post(admin, "/admin/settings", {"csrf_token": csrf(admin, "/admin/settings"),
                                                                 "section": "dicom", "key": "allowed_callers",
                                                                 "value": "CT1\x08"})
    assert category == "error" and "allowed_callers" in message and "control characters" in message, message
    assert state(app) == before


def test_regression_worklist_date_error_names_the_field(app, admin):
    """'not a DICOM date (YYYYMMDD)' did not say whether the birth date or the scheduled date was wrong."""
    before = state(app)
    status, category, message = post(admin, "/admin/worklist", {
        "csrf_token": csrf(admin, "/admin/worklist"), "patient_id": "P1", "modality": "CT",
        "scheduled_date": "2026-01-05", "birth_date": "5.5.1970"})
    assert category == "error" and "birth date" in message, message
    assert state(app) == before
