import stat
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from config.stack import (
    StackError,
    admin_path,
    banner,
    child_environment,
    needs_dataset,
    parse_key_values,
    secret_key,
    services,
    tracing_lines,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _env(tmp_path: Path, **environ: str) -> dict[str, str]:
    return child_environment(environ, local_dir=tmp_path / ".local")


def test_secret_key_is_created_once_private_and_reused(tmp_path):
    local_dir = tmp_path / ".local"

    first = secret_key(local_dir)
    second = secret_key(local_dir)

    assert first == second
    assert len(first) >= 50
    assert _mode(local_dir / "secret_key") == 0o600
    assert _mode(local_dir) == 0o700


def test_empty_secret_key_file_is_replaced_and_made_private(tmp_path):
    local_dir = tmp_path / ".local"
    local_dir.mkdir()
    (local_dir / "secret_key").write_text("\n")
    (local_dir / "secret_key").chmod(0o644)

    key = secret_key(local_dir)

    assert key
    assert (local_dir / "secret_key").read_text().strip() == key
    assert _mode(local_dir / "secret_key") == 0o600


def test_environment_reuses_the_stored_key_and_creates_no_file_when_one_is_given(tmp_path):
    assert _env(tmp_path)["DJANGO_SECRET_KEY"] == _env(tmp_path)["DJANGO_SECRET_KEY"]

    given = child_environment({"DJANGO_SECRET_KEY": "given"}, local_dir=tmp_path / "other")
    assert given["DJANGO_SECRET_KEY"] == "given"
    assert not (tmp_path / "other").exists()


def test_defaults_serve_plain_http_on_the_usual_ports(tmp_path):
    env = _env(tmp_path)

    assert env["DJANGO_HTTPS"] == "false"
    assert env["API_PORT"] == "8000"
    assert env["MOCKSOURCE_PORT"] == "5000"
    assert env["INGESTION_SOURCE_URL"] == "http://127.0.0.1:5000"
    assert env["MOCKSOURCE_DATASET"] == "data/customers.jsonl"


def test_ports_override_the_binds_and_the_source_url(tmp_path):
    env = _env(tmp_path, API_PORT="8100", MOCKSOURCE_PORT="5100")
    by_name = {service.name: service for service in services(env)}

    assert env["INGESTION_SOURCE_URL"] == "http://127.0.0.1:5100"
    assert "127.0.0.1:8100" in by_name["web"].argv
    assert "127.0.0.1:5100" in by_name["mocksource"].argv
    assert by_name["web"].health_url == "http://127.0.0.1:8100/api/health"
    assert by_name["mocksource"].health_url == "http://127.0.0.1:5100/api/health"


def test_explicit_values_are_kept(tmp_path):
    env = _env(tmp_path, DJANGO_HTTPS="true", INGESTION_SOURCE_URL="http://upstream.test", MOCKSOURCE_DATASET="d.jsonl")

    assert env["DJANGO_HTTPS"] == "true"
    assert env["INGESTION_SOURCE_URL"] == "http://upstream.test"
    assert env["MOCKSOURCE_DATASET"] == "d.jsonl"


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_a_bad_port_is_refused_with_the_variable_name(tmp_path, value):
    with pytest.raises(StackError, match="API_PORT must be a port number"):
        _env(tmp_path, API_PORT=value)


def test_only_mocksource_runs_without_the_database_url(tmp_path):
    env = _env(tmp_path, DATABASE_URL="postgres://u@db/x")

    by_name = {service.name: service for service in services(env)}

    assert "DATABASE_URL" not in by_name["mocksource"].env
    assert by_name["web"].env["DATABASE_URL"] == "postgres://u@db/x"
    assert by_name["worker"].env["DATABASE_URL"] == "postgres://u@db/x"
    assert [service.name for service in services(env)] == ["mocksource", "web", "worker"]


def test_admin_path_defaults_like_the_settings():
    assert admin_path({}) == "/backoffice/"
    assert admin_path({"DJANGO_DEBUG": "true"}) == "/admin/"
    assert admin_path({"DJANGO_ADMIN_URL": " staff-console/ "}) == "/staff-console/"


def test_create_api_token_output_is_parsed_into_the_banner(tmp_path):
    account = parse_key_values("username: demo\npassword: pa-ss\nkey: cdp_abc123\nexpires: 2027-03-01T00:00:00Z\n")
    text = banner(_env(tmp_path, API_PORT="8100"), account)

    assert account["key"] == "cdp_abc123"
    assert "  API key        cdp_abc123" in text
    assert "curl -H 'Authorization: Bearer cdp_abc123' http://127.0.0.1:8100/api/customers" in text
    assert "curl -X POST -H 'Authorization: Bearer cdp_abc123' 'http://127.0.0.1:8100/api/ingest?wait=60'" in text
    assert "http://127.0.0.1:8100/backoffice/" in text


def test_the_banner_says_in_one_line_how_to_evolve_the_upstreams_data(tmp_path):
    text = banner(_env(tmp_path, MOCKSOURCE_DATASET="data/other.jsonl"), {"username": "demo", "key": "cdp_abc123"})

    lines = [line for line in text.splitlines() if "--evolve" in line]
    assert lines == [
        "  Evolve data    python manage.py generate_customers --evolve data/other.jsonl"
        " --changed 1% --deleted 0.1% --added 0.5% --at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    ]


def test_a_bad_debug_value_in_the_admin_path_is_refused_with_the_variable_name():
    with pytest.raises(StackError, match="DJANGO_DEBUG must be true or false"):
        admin_path({"DJANGO_DEBUG": "maybe"})


def test_a_dataset_is_generated_when_missing_or_in_the_layout_before_generations(tmp_path):
    dataset = tmp_path / "customers.jsonl"
    assert needs_dataset(dataset)
    dataset.write_text('{"customer_id": "x"}\n')  # the single file of the old layout
    assert needs_dataset(dataset)
    dataset.unlink()
    call_command("generate_customers", "--count", "3", "--output", str(dataset), stdout=StringIO())
    assert not needs_dataset(dataset)


def test_compose_generates_the_dataset_unless_it_is_a_current_generation_link():
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    assert compose["services"]["dataset"]["command"][-1].startswith("test -L data/customers.jsonl || ")


def test_the_banner_says_how_to_turn_tracing_on_against_a_local_viewer(tmp_path):
    account = {"username": "demo", "key": "cdp_abc123"}
    off = banner(_env(tmp_path), account)
    assert "  Tracing        off. To see a run as one trace, start a viewer and restart with its address:" in off
    assert "docker run --rm -p 16686:16686 -p 4318:4318 jaegertracing/jaeger:2.21.0" in off
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_TRACES_URL_TEMPLATE=" in off

    on = banner(_env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://localhost:4318"), account)
    assert "  Tracing        on: otlp to http://localhost:4318" in on
    disabled = banner(_env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://x:4318", OTEL_SDK_DISABLED="true"), account)
    assert "Tracing        off." in disabled


def test_a_contradictory_trace_exporter_setting_stops_the_banner_with_the_variable_name(tmp_path):
    with pytest.raises(StackError, match="OTEL_TRACES_EXPORTER lists 'none' beside other exporters"):
        tracing_lines(_env(tmp_path, OTEL_TRACES_EXPORTER="none,console"))
