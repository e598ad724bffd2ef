"""The index is a seam: only appliance/index knows the database.

Outside appliance/index no module imports peewee, playhouse or the models, reaches
a model's ``_meta`` or runs SQL with ``execute_sql``; everything goes through an
``Index`` (its query engine and its repositories). A second backend is then a new
module in appliance/index, not an edit of the modules that use the index.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("appliance", "web")
FORBIDDEN_MODULES = ("peewee", "playhouse", "appliance.index.models")
FORBIDDEN_ATTRIBUTES = ("_meta", "execute_sql")
# Modules still to move into appliance/index repositories (none: seam-storage moved recycling,
# verification, reconciliation and the backup state).
PENDING: set[str] = set()


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN_MODULES)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What in ``source`` (the text of ``module``) reaches past the index seam."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            names = [target] + [f"{target}.{a.name}" for a in node.names]
            if any(_forbidden(n) for n in names):
                found.append(f"line {node.lineno}: from {target} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("appliance/index/"):
                continue
            yield rel, path


def test_nothing_outside_the_index_touches_the_database():
    problems = {}
    for rel, path in _sources():
        if rel in PENDING:
            continue
        found = violations(path.read_text(encoding="utf-8"), _module_of(path), path.name == "__init__.py")
        if found:
            problems[rel] = found
    assert not problems, "go through an Index repository instead:\n" + "\n".join(
        f"{rel}: {'; '.join(found)}" for rel, found in problems.items())


def test_pending_modules_still_exist():
    """The PENDING set names only real files (a moved or renamed module must leave it)."""
    assert all((ROOT / rel).exists() for rel in PENDING)


@pytest.mark.parametrize("source, module", [
    ("import peewee", "appliance.x"),
    ("from peewee import fn", "web.admin.dashboard"),
    ("from playhouse.migrations import Runner", "appliance.x"),
    ("from appliance.index.models import Instance", "web.viewer.views"),
    ("from appliance.index import models", "web.viewer.views"),
    ("from ..index.models.web import ApiToken", "appliance.records.accounts"),
    ("from ..index.models import utcnow", "appliance.dicom.mpps"),
    ("from ..index import models", "appliance.dicom.mpps"),
    ("Instance._meta.database", "appliance.ingest"),
    ("index.db.execute_sql('SELECT 1')", "web.health.views"),
])
def test_the_check_catches(source, module):
    assert violations(source, module)


@pytest.mark.parametrize("source, module", [
    ("from appliance.index import Index, utcnow", "web.sessions"),
    ("from .index.studies import StudiesRepo", "appliance.ingest"),
    ("from ..index.query import QueryError", "appliance.dicom.find"),
    ("from . import models", "appliance.importer"),  # appliance.importer.models, not the index's
])
def test_the_check_allows(source, module):
    assert not violations(source, module, is_package=module == "appliance.importer")


def test_web_reaches_the_appliance_through_one_accessor():
    """web/current.py's ``appliance()`` is the only reader of the Flask extension slot."""
    readers = [rel for rel, path in _sources() if rel.startswith("web/")
               and 'extensions["appliance"]' in path.read_text(encoding="utf-8")
               and rel not in ("web/current.py", "web/__init__.py")]
    assert not readers
