"""The container files name real commands and modules, and .env.example documents every variable."""

import json
import os
import re
import shlex
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command, get_commands

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()

MANAGE_PY_COMMAND = re.compile(r"manage\.py\s+([\w-]+)")
WSGI_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SETTINGS_VARIABLE = re.compile(r"env_(?:str|bool|int|float|list|ports?|networks)\(\s*\"([A-Z0-9_]+)\"")
DOCUMENTED_VARIABLE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
STACK_VARIABLES = {"API_PORT", "MOCKSOURCE_PORT"}
MOCKSOURCE_VARIABLES = {
    "MOCKSOURCE_DATASET",
    "MOCKSOURCE_FAULT_SEED",
    "MOCKSOURCE_ERROR_RATE",
    "MOCKSOURCE_RATE_LIMIT_RATE",
    "MOCKSOURCE_RETRY_AFTER_FORMAT",
    "MOCKSOURCE_RETRY_AFTER_SECONDS",
    "MOCKSOURCE_LATENCY_MS",
    "MOCKSOURCE_TRUNCATE_RATE",
    "MOCKSOURCE_MALFORMED_RATE",
    "MOCKSOURCE_DISCONNECT_RATE",
    "MOCKSOURCE_DRIP_BYTES_PER_SECOND",
}


def _dockerfile_instructions(keyword: str) -> list[str]:
    return re.findall(rf"^{keyword}\s+(.+)$", DOCKERFILE, re.MULTILINE)


def _argv(command: str | list[str]) -> list[str]:
    return command if isinstance(command, list) else shlex.split(command)


def _commands() -> dict[str, list[str]]:
    """Every command that runs: each service's, and the image's default."""
    commands = {name: _argv(service["command"]) for name, service in SERVICES.items() if "command" in service}
    commands["Dockerfile CMD"] = json.loads(_dockerfile_instructions("CMD")[-1])
    return commands


def _wsgi_targets() -> set[str]:
    targets = set()
    for argv in _commands().values():
        # `sh -c "..."` hides a command line in one argument.
        words = [word for argument in argv for word in shlex.split(argument)]
        if "gunicorn" in words:
            targets |= {word for word in words[words.index("gunicorn") + 1 :] if WSGI_TARGET.match(word)}
    return targets


def _published_container_ports(service: dict) -> set[str]:
    return {str(port).rsplit(":", 1)[-1] for port in service.get("ports", [])}


def _documented() -> set[str]:
    return set(DOCUMENTED_VARIABLE.findall(ENV_EXAMPLE))


# --- docker-compose.yml -----------------------------------------------------------------


def test_compose_runs_the_whole_pipeline():
    assert {"postgres", "mocksource", "web", "worker"} <= SERVICES.keys()


def test_api_and_mocksource_ports_are_published():
    assert "8000" in _published_container_ports(SERVICES["web"])
    assert "5000" in _published_container_ports(SERVICES["mocksource"])


def test_postgres_has_a_healthcheck_and_keeps_its_data_in_a_named_volume():
    postgres = SERVICES["postgres"]

    assert "pg_isready" in " ".join(_argv(postgres["healthcheck"]["test"]))
    volume_names = {volume.split(":", 1)[0] for volume in postgres["volumes"]}
    assert volume_names & set(COMPOSE["volumes"])


@pytest.mark.parametrize("name", ["web", "worker"])
def test_web_and_worker_wait_for_a_healthy_database_and_finished_migrations(name):
    depends_on = SERVICES[name]["depends_on"]

    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_django_services_talk_to_the_compose_network_over_plain_http():
    environment = SERVICES["web"]["environment"]

    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["INGESTION_SOURCE_URL"] == "http://mocksource:5000"
    assert environment["DJANGO_HTTPS"].endswith(":-false}")
    assert "localhost" in environment["DJANGO_ALLOWED_HOSTS"]
    assert SERVICES["worker"]["environment"]["DATABASE_URL"] == environment["DATABASE_URL"]


def test_mocksource_gets_no_database_url():
    assert "DATABASE_URL" not in SERVICES["mocksource"].get("environment", {})


def test_every_manage_py_command_exists():
    names = {
        (where, command) for where, argv in _commands().items() for command in MANAGE_PY_COMMAND.findall(" ".join(argv))
    }

    assert {command for _, command in names} >= {"migrate", "generate_customers", "procrastinate"}
    missing = {(where, command) for where, command in names if command not in get_commands()}
    assert not missing


def test_every_gunicorn_target_resolves(tmp_path):
    targets = _wsgi_targets()
    assert {"config.wsgi:application", "mocksource.server:application"} <= targets
    # mocksource builds its application on first access, from a dataset: give it a tiny one.
    dataset = tmp_path / "customers.jsonl"
    call_command("generate_customers", "--count", "3", "--output", str(dataset), stdout=StringIO())
    resolve = (
        "import importlib, sys\n"
        "for target in sys.argv[1:]:\n"
        "    module, _, attribute = target.partition(':')\n"
        "    getattr(importlib.import_module(module), attribute)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", resolve, *sorted(targets)],
        cwd=ROOT,
        env={**os.environ, "MOCKSOURCE_DATASET": str(dataset)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_every_gunicorn_config_file_loads(tmp_path):
    """`--config FILE` of each gunicorn command names a file gunicorn accepts, with that command's app."""
    dataset = tmp_path / "customers.jsonl"
    call_command("generate_customers", "--count", "3", "--output", str(dataset), stdout=StringIO())
    checked = set()
    for argv in _commands().values():
        words = [word for argument in argv for word in shlex.split(argument)]
        if "gunicorn" not in words or "--config" not in words:
            continue
        config = words[words.index("--config") + 1]
        target = next(word for word in words if WSGI_TARGET.match(word))
        assert (ROOT / config).is_file(), config
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", "--check-config", "--config", config, target],
            cwd=ROOT,
            env={**os.environ, "MOCKSOURCE_DATASET": str(dataset)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        checked.add(config)
    assert "config/gunicorn.py" in checked


# --- Dockerfile -------------------------------------------------------------------------


def test_image_is_python_3_12_or_newer():
    match = re.match(r"python:(\d+)\.(\d+)", _dockerfile_instructions("FROM")[0])

    assert match
    assert (int(match[1]), int(match[2])) >= (3, 12)


def test_image_installs_the_pinned_requirements():
    assert any("pip install" in run and "-r requirements.txt" in run for run in _dockerfile_instructions("RUN"))


def test_image_runs_as_a_non_root_user():
    users = _dockerfile_instructions("USER")

    assert users
    assert users[-1].strip() not in {"root", "0"}


def test_image_default_command_serves_the_api_with_gunicorn():
    command = _commands()["Dockerfile CMD"]

    assert command[0] == "gunicorn"
    assert "config.wsgi:application" in command


# --- .env.example -----------------------------------------------------------------------


def test_env_example_documents_every_setting():
    read_by_settings = set(SETTINGS_VARIABLE.findall((ROOT / "config" / "settings" / "base.py").read_text()))

    assert read_by_settings
    assert read_by_settings - _documented() == set()


def test_env_example_documents_the_stack_and_mocksource_variables():
    mocksource_config = (ROOT / "mocksource" / "config.py").read_text()
    read_by_mocksource = set(re.findall(r"\"(MOCKSOURCE_[A-Z0-9_]+)\"", mocksource_config))

    assert (STACK_VARIABLES | MOCKSOURCE_VARIABLES | read_by_mocksource) - _documented() == set()


def test_env_example_documents_the_gunicorn_variables():
    # Variable names are the only upper-case string literals in the gunicorn settings.
    read_by_gunicorn = set(re.findall(r"\"([A-Z][A-Z0-9_]+)\"", (ROOT / "config" / "gunicorn.py").read_text()))

    assert read_by_gunicorn
    assert read_by_gunicorn - _documented() == set()


def test_env_example_sets_nothing():
    active = [line for line in ENV_EXAMPLE.splitlines() if re.match(r"^\s*[A-Z][A-Z0-9_]*=", line)]

    assert active == []
