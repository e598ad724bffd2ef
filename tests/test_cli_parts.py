"""The CLI's structure: no import loop between its modules, and a command builds only what it needs."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import free_port, init_data_dir, run_cli

PACKAGE = Path(__file__).resolve().parent.parent / "appliance" / "cli"


def cli_imports(path: Path) -> set[str]:
    """The appliance.cli modules ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("appliance.cli."):
            found.add(node.module.split(".")[2])
    return found


def test_the_cli_modules_import_each_other_without_a_loop():
    graph = {p.stem: cli_imports(p) for p in PACKAGE.glob("*.py")}
    assert len(graph) > 5, graph

    def visit(module: str, path: tuple[str, ...]) -> None:
        for imported in graph.get(module, ()):
            assert imported not in path + (module,), f"import loop: {' -> '.join(path + (module, imported))}"
            visit(imported, path + (module,))

    for module in graph:
        visit(module, ())


def test_a_command_that_needs_no_dicom_node_runs_with_broken_dicom_tls_settings(tmp_path):
    data = init_data_dir(tmp_path / "data")
    broken = {"PACS_DICOM_TLS_PORT": str(free_port()), "PACS_DICOM_TLS_CERT": str(tmp_path / "missing.pem")}
    # `user list` and `modality list` open the index, not the node and its TLS files
    assert "admin" in run_cli("user", "list", "--data", data, env=broken).stdout
    run_cli("modality", "list", "--data", data, env=broken)
    served = run_cli("serve", "--data", data, env=broken, check=False)  # builds the node: refuses to start
    assert served.returncode != 0 and "missing.pem" in served.stderr and "Traceback" not in served.stderr
