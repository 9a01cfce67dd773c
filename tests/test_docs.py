"""The README and docs cite only what exists: files, environment variables, stage and test counts.

Checked against the repository itself (the tree, the code that reads a variable, DVC's own
stage list, pytest's own collection), never against a copy of the numbers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = (
    "dnc/",
    "pipelines/",
    "docs/",
    "presets/",
    "scripts/",
    "benchmarks/",
    "tests/",
    "docker/",
    ".ci/",
)
CODE_DIRS = ("dnc", "pipelines", "scripts", ".ci", "docker", "benchmarks", "tests")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _cited_paths() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for token in re.findall(r"[`(\s]((?:\.ci|[a-z_]+)/[\w./-]+)", _text(doc)):
            token = token.rstrip(".,:;)")
            if (
                token.startswith(TOP)
                and not any(c in token for c in "*<>{}$")
                and "..." not in token
            ):
                found.append((doc.name, token.split(":")[0]))
    return sorted(set(found))


@pytest.mark.parametrize(("doc", "path"), _cited_paths())
def test_cited_path_exists(doc, path):
    assert (ROOT / path).exists(), f"{doc} cites {path}, which does not exist"


def _code_text() -> str:
    parts = []
    for d in CODE_DIRS:
        base = ROOT / d
        if not base.exists():
            continue
        for f in base.rglob("*"):
            if (
                f.is_file()
                and f.suffix in {".py", ".sh", ".yaml", ".yml", ""}
                and "test_docs" not in f.name
            ):
                try:
                    parts.append(f.read_text(encoding="utf-8"))
                except UnicodeDecodeError:
                    continue
    parts += [_text(ROOT / "dvc.yaml"), _text(ROOT / "prefect.yaml")]
    return "\n".join(parts)


def _cited_variables() -> list[tuple[str, str]]:
    names = set()
    for doc in DOCS:
        names |= {(doc.name, v) for v in re.findall(r"\b(DNC_[A-Z0-9_]+)\b", _text(doc))}
    return sorted(names)


@pytest.mark.parametrize(("doc", "name"), _cited_variables())
def test_cited_environment_variable_is_read(doc, name):
    code = _code_text()
    assert re.search(rf"\b{name}\b", code), f"{doc} mentions {name}, which no code reads or sets"


@pytest.mark.integration
def test_stage_count_matches_dvc(dvc_here):
    claims = {(d.name, int(n)) for d in DOCS for n in re.findall(r"\b(\d+) stages\b", _text(d))}
    if not claims:
        pytest.skip("no stage count is cited")
    out = dvc_here(ROOT, "stage", "list", "--name-only", env={"DVC_NO_ANALYTICS": "1"})
    actual = len(out.split())
    for doc, n in claims:
        assert n == actual, f"{doc} says {n} stages; dvc stage list has {actual}"


@pytest.mark.slow
def test_test_count_matches_pytest():
    claims = {
        (d.name, int(n.replace(",", "")))
        for d in DOCS
        for n in re.findall(r"\b(\d[\d,]*) tests\b", _text(d))
    }
    if not claims:
        pytest.skip("no test count is cited")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"(\d+) tests? collected", out) or re.search(r"^(\d+) tests?", out, re.M)
    assert match, out[-500:]
    actual = int(match.group(1))
    for doc, n in claims:
        assert n == actual, f"{doc} says {n} tests; pytest collects {actual}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_docs_cite_only_the_repository(doc):
    """Users have the repository only: no guide outside it is cited."""
    outside = re.findall(r"\.\./shared|\bDESIGN\.md\b|\bSTYLE\.md\b|paper-facts", _text(doc))
    assert not outside, f"{doc.name} cites guides outside the repository: {outside}"
