"""The borders of docs/architecture.md: which package may import which, and who writes customers."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "api", "config", "customers", "ingestion", "mocksource")


def imports_of(package: str) -> set[str]:
    """Every module (dotted, absolute) that the package's non-migration modules import."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def from_apps(imports: set[str], *apps: str) -> set[str]:
    return {name for name in imports if name.split(".")[0] in apps}


def test_api_imports_no_app():
    # Its own modules it may import (pagination runs its statement through api/statements.py).
    assert from_apps(imports_of("api"), *(app for app in APPS if app != "api")) == set()


def test_accounts_imports_no_other_app_but_the_shared_api_plumbing():
    # The key's statement is one of the API's prepared statements (api/statements.py).
    assert from_apps(imports_of("accounts"), "config", "customers", "ingestion", "mocksource") == set()
    assert from_apps(imports_of("accounts"), "api") <= {"api.statements.prepared_cursor"}


def test_customers_never_imports_ingestion_or_config():
    assert from_apps(imports_of("customers"), "ingestion", "config", "mocksource") == set()


def test_ingestion_imports_only_the_models_and_the_write_services_from_customers():
    names = from_apps(imports_of("ingestion"), "customers")
    # The merge (and erasure's part of it), the change feed's pruning, and a first load's indexes.
    allowed = ("customers.models.", "customers.merge", "customers.changes", "customers.indexes")

    assert names
    assert {name for name in names if not name.startswith(allowed)} == set()


@pytest.mark.parametrize("package", ["ingestion", "config", "api"])
def test_only_customers_writes_the_customers_table_in_sql(package):
    writes = re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\{?(CUSTOMERS|\"?customers_customer)", re.IGNORECASE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and writes.search(path.read_text())
    ]

    assert offenders == []
