"""Helpers for the web tests (a uniquely named module: several test folders have a conftest.py)."""
import re

from appliance.records import accounts
from helpers import ADMIN_PASSWORD

USER_PASSWORD = "a-long-enough-password"


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client, username="admin", password=ADMIN_PASSWORD):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def make_user(appliance, username, role, password=USER_PASSWORD):
    return appliance.index.writer.run(lambda: accounts.create_user(appliance.index.accounts, username, password, role))


def page_csrf(client, path="/"):
    return csrf_from(client.get(path).text)
