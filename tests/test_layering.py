"""`dnc/` is the pure library: it must not import orchestration or tracking."""

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "optuna", "dvc", "pipelines", "sqlalchemy"}
ROOT = Path(__file__).resolve().parents[1]


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_dnc_imports_no_orchestration():
    files = sorted((ROOT / "dnc").rglob("*.py"))
    assert files, "dnc/ has no modules"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN)
        for f in files
        if imported_roots(f) & FORBIDDEN
    }
    assert offenders == {}


def test_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow.pytorch\nfrom prefect import flow\n")
    assert imported_roots(bad) & FORBIDDEN == {"mlflow", "prefect"}
