"""Mocksource stands for an upstream we do not own: separate code, separate process."""

import ast
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import mocksource
from tests.upstream import running_mocksource

PROJECT_ROOT = Path(mocksource.__file__).resolve().parent.parent
OTHER_APPS = {"customers", "ingestion", "config"}


def imported_roots(package):
    """Top-level names imported (absolutely) by every module of `package`."""
    roots = set()
    for path in (PROJECT_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def environment_without_the_project():
    return {name: value for name, value in os.environ.items() if name not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}


def test_mocksource_imports_nothing_from_the_other_apps():
    assert imported_roots("mocksource") & OTHER_APPS == set()


@pytest.mark.parametrize("package", sorted(OTHER_APPS))
def test_no_other_app_imports_mocksource(package):
    assert "mocksource" not in imported_roots(package)


def test_server_imports_without_django_settings_or_database():
    code = (
        "import sys\n"
        "from mocksource.server import create_app\n"
        "assert not [name for name in sys.modules if name.split('.')[0] == 'django'], 'django was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=environment_without_the_project(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_gunicorn_serves_the_environment_dataset_and_its_disconnect_breaks_requests(crafted_dataset):
    listener = socket.create_server(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    environment = environment_without_the_project() | {
        "MOCKSOURCE_DATASET": str(crafted_dataset),
        "MOCKSOURCE_DISCONNECT_RATE": "1",
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "mocksource.server:application", "--workers", "1"]
    # gunicorn binds to the socket made here, so there is no race for a free port.
    server = subprocess.Popen(
        [*gunicorn, "--bind", f"fd://{listener.fileno()}", "--no-control-socket", "--log-level", "warning"],
        cwd=PROJECT_ROOT,
        env=environment,
        pass_fds=[listener.fileno()],
    )
    listener.close()
    try:
        health = wait_for_health(base_url)

        assert health == {"status": "ok", "total": 25}
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
            requests.get(f"{base_url}/api/customers?limit=5", timeout=5)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_test_server_stops_on_exit(crafted_dataset):
    with running_mocksource(crafted_dataset) as base_url:
        assert requests.get(f"{base_url}/api/health", timeout=5).status_code == 200

    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{base_url}/api/health", timeout=1)


def wait_for_health(base_url, seconds=20):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(f"{base_url}/api/health", timeout=1).json()
        except requests.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
