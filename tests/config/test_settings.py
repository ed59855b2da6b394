import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_check(**env_overrides):
    # Without the suite's own settings variables (config/settings/test.py sets some).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "API_"))}
    env.update(env_overrides)
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    code = "import django; django.setup(); " + env.pop("PYTHON_CODE", "")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_mode_without_secret_key_fails_with_a_sentence():
    result = _run_check(DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://u@127.0.0.1:1/x"))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_invalid_boolean_is_rejected_with_the_variable_name():
    result = _run_check(DJANGO_DEBUG="maybe", DATABASE_URL="postgres://u@127.0.0.1:1/x")
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be true or false" in result.stderr


def test_non_postgres_database_url_is_refused():
    result = _run_check(DJANGO_DEBUG="true", DATABASE_URL="sqlite:///db.sqlite3")
    assert result.returncode != 0
    assert "DATABASE_URL must be a PostgreSQL URL" in result.stderr


def test_debug_is_off_unless_asked():
    result = _run_check(
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        PYTHON_CODE="from django.conf import settings; print('DEBUG', settings.DEBUG)",
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG False" in result.stdout


def test_a_bad_allowed_upstream_port_is_refused_with_the_variable_name():
    result = _run_check(DJANGO_DEBUG="true", DATABASE_URL="postgres://u@127.0.0.1:1/x", INGESTION_ALLOWED_PORTS="443,x")
    assert result.returncode != 0
    assert "INGESTION_ALLOWED_PORTS must be comma-separated port numbers between 1 and 65535, not 'x'." in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "sentence"),
    [
        ("ACCOUNTS_PASSWORD_MIN_LENGTH", "6", "ACCOUNTS_PASSWORD_MIN_LENGTH must be at least 8, not 6."),
        ("ACCOUNTS_LOCKOUT_FAILURES", "0", "ACCOUNTS_LOCKOUT_FAILURES must be at least 1, not 0."),
        ("ACCOUNTS_LOCKOUT_MINUTES", "soon", "ACCOUNTS_LOCKOUT_MINUTES must be a whole number, not 'soon'."),
        ("DJANGO_TRUSTED_PROXY_COUNT", "-1", "DJANGO_TRUSTED_PROXY_COUNT must be at least 0, not -1."),
        ("API_PUBLIC_DOCS", "maybe", "API_PUBLIC_DOCS must be true or false"),
        ("API_THROTTLE_READS", "lots/minute", "API_THROTTLE_READS must be a rate such as 1200/minute"),
        ("API_THROTTLE_INGEST", "10/month", "API_THROTTLE_INGEST must be a rate such as 1200/minute"),
        ("METRICS_TOKEN", "short", "METRICS_TOKEN must be at least 16 characters"),
        ("METRICS_TOKEN", "a" * 20 + " b", "METRICS_TOKEN must be at least 16 characters"),
        (
            "METRICS_ALLOWED_NETWORKS",
            "10.0.0.0/8,10.0.0.0/33",
            "METRICS_ALLOWED_NETWORKS must be comma-separated networks such as 10.0.0.0/8 or 2001:db8::/32, "
            "not '10.0.0.0/33'.",
        ),
        ("METRICS_ALLOWED_NETWORKS", "10.0.0.1/8", "not '10.0.0.1/8' (an address with host bits set)."),
        ("METRICS_CACHE_SECONDS", "-1", "METRICS_CACHE_SECONDS must be at least 0.0, not -1.0."),
        ("API_READY_CACHE_SECONDS", "soon", "API_READY_CACHE_SECONDS must be a number, not 'soon'."),
    ],
)
def test_bad_account_and_docs_settings_are_refused_with_the_variable_name(variable, value, sentence):
    result = _run_check(DJANGO_DEBUG="true", DATABASE_URL="postgres://u@127.0.0.1:1/x", **{variable: value})

    assert result.returncode != 0
    assert sentence in result.stderr


@pytest.mark.parametrize(("debug", "public"), [("true", True), ("false", False)])
def test_api_docs_are_public_by_default_only_in_debug(debug, public):
    result = _run_check(
        DJANGO_DEBUG=debug,
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        PYTHON_CODE="from django.conf import settings; print('PUBLIC', settings.API_PUBLIC_DOCS)",
    )

    assert result.returncode == 0, result.stderr
    assert f"PUBLIC {public}" in result.stdout


def test_password_validators_and_lockout_defaults():
    result = _run_check(
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        PYTHON_CODE=(
            "from django.conf import settings as s; "
            "print([v['NAME'].rsplit('.', 1)[1] for v in s.AUTH_PASSWORD_VALIDATORS]); "
            "print(s.AUTH_PASSWORD_VALIDATORS[1]['OPTIONS'], s.ACCOUNTS_LOCKOUT_FAILURES, "
            "s.ACCOUNTS_LOCKOUT_MINUTES, s.TRUSTED_PROXY_COUNT)"
        ),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['UserAttributeSimilarityValidator', 'MinimumLengthValidator', 'CommonPasswordValidator', "
        "'NumericPasswordValidator']",
        "{'min_length': 12} 5 15 0",
    ]


def test_the_password_minimum_length_comes_from_its_variable():
    result = _run_check(
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        ACCOUNTS_PASSWORD_MIN_LENGTH="16",
        PYTHON_CODE="from django.conf import settings as s; print(s.AUTH_PASSWORD_VALIDATORS[1]['OPTIONS'])",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'min_length': 16}\n"


def test_metrics_defaults_open_scrapes_and_short_cache_windows():
    result = _run_check(
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        PYTHON_CODE=(
            "from django.conf import settings as s; "
            "print(s.METRICS_TOKEN, s.METRICS_ALLOWED_NETWORKS, s.METRICS_CACHE_SECONDS, s.API_READY_CACHE_SECONDS)"
        ),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "None () 5.0 1.0\n"


def test_metrics_networks_and_token_come_from_their_variables():
    result = _run_check(
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        METRICS_TOKEN=" " + "t" * 32 + " ",
        METRICS_ALLOWED_NETWORKS="10.0.0.0/8, 192.0.2.7 ,2001:db8::/32",
        PYTHON_CODE=(
            "from django.conf import settings as s; "
            "print(s.METRICS_TOKEN); print([str(n) for n in s.METRICS_ALLOWED_NETWORKS])"
        ),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["t" * 32, "['10.0.0.0/8', '192.0.2.7/32', '2001:db8::/32']"]


THRESHOLD = "from django.conf import settings as s; print(s.DATABASES['default']['OPTIONS']['prepare_threshold'])"


@pytest.mark.parametrize(("value", "threshold"), [(None, "5"), ("false", "None")])
def test_prepared_statements_are_on_unless_turned_off_for_a_pooler(value, threshold):
    result = _run_check(
        DJANGO_SECRET_KEY="x" * 60,
        DATABASE_URL="postgres://u@127.0.0.1:1/x",
        **({"API_PREPARED_STATEMENTS": value} if value else {}),
        PYTHON_CODE=THRESHOLD,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == threshold


@pytest.mark.parametrize(("name", "value"), [("INGESTION_DEFER_INDEXES_FROM", "-1"), ("GUNICORN_REUSE_PORT", "maybe")])
def test_the_speed_settings_refuse_bad_values_with_a_sentence(name, value):
    if name.startswith("GUNICORN_"):
        # gunicorn reads its own variables in its master, through config/env.py.
        code = [sys.executable, "-c", "import config.gunicorn"]
        result = subprocess.run(
            code, cwd=ROOT, env={**os.environ, name: value}, capture_output=True, text=True, timeout=60
        )
    else:
        result = _run_check(DJANGO_DEBUG="true", DATABASE_URL="postgres://u@127.0.0.1:1/x", **{name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_gunicorn_gives_each_worker_its_own_listening_socket_unless_told_not_to():
    def reuse_port(**env) -> str:
        code = [sys.executable, "-c", "import config.gunicorn as g; print(g.reuse_port)"]
        env = {**{k: v for k, v in os.environ.items() if k != "GUNICORN_REUSE_PORT"}, **env}
        return subprocess.run(code, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60).stdout.strip()

    assert (reuse_port(), reuse_port(GUNICORN_REUSE_PORT="false")) == ("True", "False")
