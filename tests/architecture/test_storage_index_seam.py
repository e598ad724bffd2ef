"""Recycling, verification, reconciliation and the backup reach the database only through their Index's
repositories (index.recycling, index.objects, index.backup): no peewee, no models, no SQL of their own."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = [ROOT / "appliance" / name for name in ("services/recycle.py", "services/verify.py", "index/reconcile.py")]
MODULES += sorted((ROOT / "appliance" / "backup").rglob("*.py"))
FORBIDDEN_IMPORTS = ("peewee", "playhouse", "sqlcipher3", "sqlite3")
SQL = re.compile(r"\bSELECT\b.*\bFROM\b|\bINSERT INTO\b|\bDELETE FROM\b|\bUPDATE\s+\w+\s+SET\b|\bPRAGMA\b", re.S)


def database_access(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in FORBIDDEN_IMPORTS or "models" in parts:
                found.append(f"{where}:{node.lineno}: imports {name}")
        if isinstance(node, ast.Attribute) and node.attr in ("execute_sql", "atomic"):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (SQL belongs in appliance/index)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            found.append(f"{where}:{node.lineno}: SQL text {node.value[:40]!r}")
    return found


def test_storage_modules_use_only_index_repositories():
    found = []
    for path in MODULES:
        found += database_access(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


def test_the_check_catches_direct_database_use():
    for line in ("from .index.models import Instance", "from ..index.models.backup import BackupRun",
                 "from peewee import fn", "db.execute_sql('x')", "q = 'DELETE FROM backup_object'",
                 "q = 'SELECT object_id FROM recycled_object'"):
        assert database_access(line, "x"), line
    for line in ("from .index import utcnow", "index.recycling.totals()", "progress('checking what the target holds')",
                 "x = 'Delete one study (index first, then files)'"):
        assert not database_access(line, "x"), line
