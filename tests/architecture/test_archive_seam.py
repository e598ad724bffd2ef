"""The archive's file layout is private to appliance/archive (issue 17: the archive is an interface).

Every other module of the appliance and the web app uses the StorageArea
interface (appliance/archive/area.py) and never builds or opens a path inside
the archive: no ``archive.path(...)``, ``archive.root``, ``archive.objects_dir``,
no ``archive._anything``, no ``archive_dir / "objects"``. Tests and benchmarks
may reach the files on purpose (fault injection, fake corpora) and are not checked.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("appliance", "web")
OWNER = ROOT / "appliance" / "archive"
LAYOUT_ATTRS = {"path", "root", "objects_dir", "tmp_dir", "staging_dir"}
LAYOUT_DIRS = {"objects", "tmp", "orphans", "restoring"}
PRIVATE_NAMES = {"FileStaging", "ORPHANS_DIR", "STAGING_DIRS", "OBJECT_ID"}


def _names_archive(node: ast.AST) -> bool:
    """``archive``, ``self.archive``, ``app.archive``, ``config.archive_dir``, ``keyless_archive`` ..."""
    text = ast.unparse(node).rsplit(".", 1)[-1].lower()
    return "archive" in text


def violations(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _names_archive(node.value):
            if node.attr in LAYOUT_ATTRS or (node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (the archive's layout is private)")
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _names_archive(node.left)
              and isinstance(node.right, ast.Constant) and node.right.value in LAYOUT_DIRS):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)} (a path inside the archive)")
        elif isinstance(node, ast.ImportFrom) and "archive" in (node.module or ""):
            if (node.module or "").split(".")[-1] in ("store", "staging"):
                found.append(f"{where}:{node.lineno}: imports {node.module} (use appliance.archive's interface)")
            for alias in node.names:
                if alias.name in PRIVATE_NAMES:
                    found.append(f"{where}:{node.lineno}: imports {alias.name} (private to appliance/archive)")
    return found


def test_no_module_outside_the_archive_reaches_its_files():
    found = []
    for top in CHECKED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if OWNER in path.parents:
                continue
            found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


def test_the_check_catches_each_way_in():
    """The checker itself can fail: each of these is how a caller used to reach the files."""
    bad = [
        "self.archive.path(oid).stat().st_size",
        "os.rename(staged, archive.path(oid))",
        "moved_to = archive.root / 'orphans'",
        "tmp = archive.tmp_dir / oid",
        "fsync_dir(archive.objects_dir)",
        "self.archive._path(oid)",
        "config.archive_dir / 'objects'",
        "from ..archive.store import Archive",
        "from .archive.staging import FileStaging",
        "from .archive import ORPHANS_DIR",
    ]
    for line in bad:
        assert violations(line, "x"), line
    good = [
        "self.archive.open_sealed(oid)",
        "archive.quarantine_orphans(orphans)",
        "shutil.disk_usage(config.archive_dir)",
        "request.path",
        "from .archive import Archive, StorageArea",
    ]
    for line in good:
        assert not violations(line, "x"), line
