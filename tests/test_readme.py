"""The README's behaviour tables and docs/security.md name the tests behind each line: every named test exists."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `test_pipeline::test_x` means tests/ingestion/test_pipeline.py; other files are named by path.
NAMED = re.compile(r"`(?:(tests/[\w/]+\.py)|(test_\w+))::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def _named_tests(document: str = "README.md") -> list[tuple[Path, str]]:
    text = (ROOT / document).read_text()
    return [
        (ROOT / path if path else ROOT / "tests" / "ingestion" / f"{module}.py", name)
        for path, module, name in NAMED.findall(text)
    ]


def test_the_readme_names_tests_for_its_behaviour_tables():
    assert len(_named_tests()) > 80


@pytest.mark.parametrize("document", ["README.md", "docs/security.md"])
def test_every_test_a_document_names_exists(document):
    missing = [
        f"{path.relative_to(ROOT)}::{name}"
        for path, name in _named_tests(document)
        if not path.exists() or name not in _tests_in(path)
    ]
    assert missing == []


def test_every_owasp_api_risk_is_mapped_to_tests():
    rows = [line for line in (ROOT / "docs" / "security.md").read_text().splitlines() if line.startswith("| API")]
    assert [row.split()[1] for row in rows] == [f"API{number}" for number in range(1, 11)]
    assert [row for row in rows if not NAMED.search(row)] == []


def test_every_line_of_the_behaviour_tables_names_a_test():
    text = (ROOT / "README.md").read_text()
    for heading in ("### Semantics", "## Failure behaviour"):
        section = text.split(heading, 1)[1].split("\n#", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
        body = rows[1:]  # the header row names the columns
        assert body, heading
        assert [row for row in body if not NAMED.search(row)] == [], heading
