import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_record_is_one_json_object_with_time_level_logger_message_and_safe_extras(log):
    logger, lines = log

    logger.warning("upstream retry", extra={"run_id": 7, "page": 3, "attempt": 2, "reason": "timeout"})

    [line] = lines()
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "WARNING",
        "logger": "tests.json",
        "message": "upstream retry",
        "run_id": 7,
        "page": 3,
        "attempt": 2,
        "reason": "timeout",
    }


def test_time_is_iso_8601_utc(log):
    logger, lines = log

    logger.info("run started")

    [line] = lines()
    assert line["time"][10] == "T"
    assert line["time"].endswith("Z")


def test_extras_off_the_allowlist_never_reach_the_line(log):
    logger, lines = log

    logger.info("batch committed", extra={"run_id": 1, "email": "ada@example.com", "phone": "+44 20 7946 0000"})

    [line] = lines()
    assert line["run_id"] == 1
    assert "email" not in line
    assert "phone" not in line
    assert "ada@example.com" not in json.dumps(line)


def test_an_exception_is_logged_with_type_and_frames_but_not_its_message(log):
    logger, lines = log

    email = "jane.doe" + "@example.com"  # data, as a real run would have it, not source text
    try:
        raise ValueError(f"no customer {email}")
    except ValueError:
        logger.exception("run crashed", extra={"run_id": 9})

    [line] = lines()
    assert line["level"] == "ERROR"
    assert line["exception"].startswith("ValueError\n")
    assert "test_logging.py" in line["exception"] and "raise ValueError" in line["exception"]
    assert "jane.doe" not in json.dumps(line)


def test_a_database_error_is_logged_with_its_sqlstate_and_no_row_values(log):
    import psycopg
    from django.db import IntegrityError

    logger, lines = log
    detail = 'duplicate key value violates unique constraint "customer_email_ci_unique"\n'
    detail += "DETAIL:  Key (lower(email::text))=(ada@example.org) already exists."
    try:
        try:
            raise psycopg.errors.UniqueViolation(detail)
        except psycopg.Error as exc:
            raise IntegrityError(detail) from exc
    except IntegrityError:
        logger.exception("batch failed", extra={"run_id": 3})

    [line] = lines()
    assert line["exception"].startswith("IntegrityError (SQLSTATE 23505)")
    assert "ada@example.org" not in json.dumps(line)


def test_a_value_json_cannot_encode_is_written_as_text(log):
    logger, lines = log
    job_id = uuid.uuid4()

    logger.info("job skipped", extra={"job_id": job_id})

    [line] = lines()
    assert line["job_id"] == str(job_id)


def _django_process(code: str, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PROMETHEUS_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DJANGO_SECRET_KEY": "x" * 60,
        # Logging needs no database; nothing connects to this one.
        "DATABASE_URL": "postgres://unused@127.0.0.1:1/unused",
        **environ,
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


LOG_A_BATCH = (
    "import logging; logging.getLogger('ingestion.pipeline').info("
    "'batch committed', extra={'run_id': 5, 'page': 2, 'inserted': 100, 'email': 'ada@example.com'})"
)


def test_production_settings_log_json_lines_to_stdout():
    result = _django_process(LOG_A_BATCH)

    assert result.returncode == 0, result.stderr
    [line] = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["logger"] == "ingestion.pipeline"
    assert (line["message"], line["run_id"], line["page"], line["inserted"]) == ("batch committed", 5, 2, 100)
    assert "ada@example.com" not in result.stdout


def test_plain_format_can_be_asked_for():
    result = _django_process(LOG_A_BATCH, DJANGO_LOG_FORMAT="plain")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("INFO ingestion.pipeline batch committed")


def test_debug_defaults_to_plain_text():
    result = _django_process(
        "from django.conf import settings; print(settings.LOG_FORMAT)", DJANGO_DEBUG="true", DJANGO_HTTPS="false"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "plain"


@pytest.mark.parametrize(("name", "value"), [("DJANGO_LOG_FORMAT", "xml"), ("DJANGO_LOG_LEVEL", "LOUD")])
def test_unknown_log_format_or_level_is_refused_with_the_variable_name(name, value):
    result = _django_process("", **{name: value})

    assert result.returncode != 0
    assert f"{name} must be" in result.stderr


# --- Paths a client sent, in every sink ---------------------------------------------------

# Escapes that would fake a second log line, recolour a terminal or split a line in some
# readers (NEL, LINE SEPARATOR), and a path far longer than any real one.
HOSTILE_PATHS = {
    "newline": "/api/x\nFAKE 200 admin logged in",
    "control": "/api/x\r\x1b[31m\x00\x7f\x85\u2028",
    "long": "/api/" + "a" * 4000,
}
PATH_BOUND = 200 + len("…")

GET_A_PATH = (
    "import sys; from django.test import Client; "
    "from django.test.utils import setup_test_environment; setup_test_environment(); "
    "Client().get(sys.argv[1])"
)


def _not_found(path: str, log_format: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PROMETHEUS_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DJANGO_SECRET_KEY": "x" * 60,
        "DJANGO_HTTPS": "false",
        "DJANGO_ALLOWED_HOSTS": "testserver",
        "DJANGO_LOG_FORMAT": log_format,
        # A 404 needs no database; nothing connects to this one.
        "DATABASE_URL": "postgres://unused@127.0.0.1:1/unused",
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + GET_A_PATH, quote(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_escaped_and_bounded(logged_path: str, sent: str) -> None:
    assert logged_path.isprintable(), logged_path
    assert len(logged_path) <= PATH_BOUND
    if len(sent) > 200:
        assert logged_path.endswith("…")


@pytest.mark.parametrize("kind", HOSTILE_PATHS)
def test_a_not_found_path_is_logged_escaped_and_truncated_in_plain_text(kind):
    sent = HOSTILE_PATHS[kind]

    result = _not_found(sent, "plain")

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()  # one record, one line
    assert " WARNING django.request Not Found: /api/" in line
    _assert_escaped_and_bounded(line.split("Not Found: ", 1)[1], sent)


@pytest.mark.parametrize("kind", HOSTILE_PATHS)
def test_a_not_found_path_is_logged_escaped_and_truncated_in_json(kind):
    sent = HOSTILE_PATHS[kind]

    result = _not_found(sent, "json")

    assert result.returncode == 0, result.stderr
    [text] = result.stdout.split("\n")[:-1]  # split on newlines only: NEL and U+2028 must not be in it either
    line = json.loads(text)
    assert line["logger"] == "django.request"
    assert line["message"].startswith("Not Found: /api/")
    _assert_escaped_and_bounded(line["message"].removeprefix("Not Found: "), sent)


@pytest.mark.parametrize("kind", HOSTILE_PATHS)
def test_an_extra_path_is_escaped_and_truncated_by_the_json_formatter(log, kind):
    logger, lines = log
    sent = HOSTILE_PATHS[kind]

    logger.info("request", extra={"path": sent, "method": "GET\n"})

    [line] = lines()
    _assert_escaped_and_bounded(line["path"], sent)
    assert line["method"] == "GET\\x0a"


@pytest.mark.parametrize("kind", HOSTILE_PATHS)
def test_the_gunicorn_access_log_escapes_and_truncates_the_path(tmp_path, kind):
    import datetime
    import types

    from gunicorn import glogging
    from gunicorn.config import Config

    from config import gunicorn as gunicorn_settings

    sent = HOSTILE_PATHS[kind]
    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("access_log_format", gunicorn_settings.access_log_format)
    logger = getattr(gunicorn_settings, "logger_class", glogging.Logger)(cfg)
    # What gunicorn hands its logger: PATH_INFO is percent-decoded, so %0A arrives as a newline.
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/", "PATH_INFO": sent, "SERVER_PROTOCOL": "HTTP/1.1"}
    response = types.SimpleNamespace(status="404 Not Found", sent=10, headers=[])

    logger.access(response, types.SimpleNamespace(headers=[]), environ, datetime.timedelta(milliseconds=3))
    logger.close_on_exec()

    [line] = (tmp_path / "access.log").read_text(encoding="utf-8").split("\n")[:-1]
    logged_path = line.split('"GET ', 1)[1].rsplit(" HTTP/1.1", 1)[0]
    _assert_escaped_and_bounded(logged_path, sent)
    assert line.endswith("404 10 3ms")
