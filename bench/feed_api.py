"""The change feed (GET /api/changes) from one gunicorn worker at 1M events.

The feed table (customers_customerchange) is filled in SQL with --size events: cursors
1..N, nine inserts to one update (a one-field mask), full customer state on each, `at`
rising with the cursor; then VACUUM ANALYZE. The API is served by gunicorn with
config/gunicorn.py and ONE worker (DEBUG off), authentication and throttling as shipped:
the client sends an API key (`Authorization: Bearer cdp_...`, accounts/api_keys.py) with the
scopes customers:read and changes:read, and the changes throttle is raised to
API_THROTTLE_CHANGES=1000000/minute, so it counts every request and refuses none.

Three pages of --limit events (default 1000), each loaded for --duration seconds after a
--warmup, targets taking turns within each of --repeat measurements (medians):

  start    GET /api/changes?after=0&limit=1000
  middle   GET /api/changes?after=N/2&limit=1000
  end      GET /api/changes?after=N-1000&limit=1000

The load comes from read_api.py's generators (wrk when installed, else its thread pool of
keep-alive sessions), sending the key with the Bearer scheme. Reported: requests/s,
events/s (requests/s x the events a page holds, read from a response), p50, p99, non-2xx,
the near-end p50 over the start p50 (keyset: should be ~1), the CPU the server, PostgreSQL
and the client used meanwhile; and, in-process (Django's test client), the SQL statements
of one feed request (CaptureQueriesContext) and where its time goes: the authentication and
feed statements as Python waits for them, the feed statement as PostgreSQL executes it (it
builds the JSON) and the same page as plain rows, and the whole request.

    python bench/feed_api.py --size 1000000 --duration 10 --repeat 3
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment, read_api, report, servers
from bench.environment import RESULTS, ROOT

CHANGES = "customers_customerchange"
TARGETS = ("start", "middle", "end")
USERNAME = "bench-feed"
THROTTLE = "1000000/minute"
TARGET_EVENTS_PER_SECOND = 20_000
IN_PROCESS_REPEAT = 15
FEED_MARK = "customers.changes.feed_page"  # the comment that opens the statement of feed_page()
TICK = os.sysconf("SC_CLK_TCK")

# Cursors 1..N, dense; nine inserts to one update (which names one field of the first seven);
# every event carries the customer's whole state, as the merge writes it.
FILL_SQL = """
INSERT INTO customers_customerchange (cursor, kind, customer_id, run_id, at, changed, first_name, last_name,
                                      email, phone, address, date_of_birth, account_balance, created_at)
SELECT n,
       CASE WHEN n %% 10 = 0 THEN 'updated' ELSE 'inserted' END,
       gen_random_uuid(),
       1,
       now() - (%(size)s::int - n) * interval '100 milliseconds',
       CASE WHEN n %% 10 = 0 THEN 1 << ((n / 10) %% 7) ELSE 255 END,
       first_name,
       last_name,
       lower(first_name) || '.' || lower(last_name) || n || '@example.com',
       '+1-555-' || lpad((n %% 10000000)::text, 7, '0'),
       (n %% 9999 + 1) || ' '
           || (ARRAY['Main Street', 'Oak Avenue', 'Maple Drive', 'Cedar Lane', 'Elm Road'])[1 + n %% 5] || ', '
           || (ARRAY['Springfield, IL 62701', 'Portland, OR 97201', 'Austin, TX 73301'])[1 + n %% 3],
       date '1940-01-01' + ((n::bigint * 7919) %% 25000)::int,
       ((n::bigint * 7919) %% 100000000)::numeric(15, 2) / 100,
       timestamptz '2020-01-01 00:00:00+00' + n * interval '1 minute'
FROM generate_series(1, %(size)s::int) AS n,
     LATERAL (SELECT (ARRAY['Ava', 'Liam', 'Olivia', 'Noah', 'Emma', 'Mateo', 'Sofia', 'Lucas', 'Mia', 'Amir'])
                         [1 + n %% 10] AS first_name,
                     (ARRAY['Smith', 'Garcia', 'Nguyen', 'Okafor', 'Kowalski', 'Rossi', 'Tanaka', 'Müller',
                            'Haddad', 'Johansson'])[1 + (n / 10) %% 10] AS last_name) AS names
"""
# The feed's page alone, as plain rows: what customers/changes.py's statement costs without its JSON.
ROWS_SQL = "SELECT * FROM customers_customerchange WHERE cursor > %(after)s ORDER BY cursor LIMIT %(limit)s"
HITS_SQL = "SELECT coalesce(sum(hits), 0) FROM accounts_requestcount WHERE scope = 'changes' AND key = %s"


def main() -> None:
    args = parse_args()
    servers.stop_on_sigterm()
    database_url, env = environment.migrated(args.database_url, API_THROTTLE_CHANGES=THROTTLE)
    os.environ.update(env)

    import django

    # whitenoise's, as the test client builds the middleware: no collectstatic here, no static files asked for.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    django.setup()
    tool = "wrk" if args.tool == "auto" and shutil.which("wrk") else args.tool.replace("auto", "python")
    load_before = environment.load_average()
    print(f"revision {environment.revision()}; load before: {load_before}; load generator: {tool}", flush=True)
    targets = {"start": 0, "middle": args.size // 2, "end": args.size - args.limit}
    try:
        fill_seconds, table_bytes = fill(database_url, args.size)
        print(f"{args.size:,} events filled in {fill_seconds:.1f} s ({table_bytes / 2**20:,.0f} MiB)", flush=True)
        secret, key_id = _key()
        in_process = measure_in_process(targets, secret, args.limit)
        served = measure_served(targets, secret, key_id, tool, args, env, database_url)
    finally:
        _clean_up(database_url)
    load_after = environment.load_average()
    machine = environment.machine(database_url)
    saved = report.save(
        "feed_api",
        {
            "command": _command(),
            "machine": machine,
            "load_before": load_before,
            "load_after": load_after,
            "tool": tool,
            "throttle": env["API_THROTTLE_CHANGES"],
            "gunicorn_threads": env.get("GUNICORN_THREADS", "4"),
            "settings": vars(args),
            "fill_seconds": fill_seconds,
            "table_bytes": table_bytes,
            "targets": targets,
            "in_process": in_process,
            "served": served,
        },
    )
    print(f"\ncommand: {_command()}")
    print(
        f"machine: {machine['cpu']}, nproc {machine['nproc']}, {machine['memory']}, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}; date {machine['date']}"
    )
    print(f"revision {machine['revision']}; load average before: {load_before}; after: {load_after}")
    print(f"load generator: {tool}")
    print(f"raw results: {saved.relative_to(ROOT)}\n")
    print(render(args, env, targets, in_process, served, fill_seconds, table_bytes))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="Events in the feed (default 1M).")
    parser.add_argument("--limit", type=int, default=1000, help="Events per page, 1 to 1000 (default 1000).")
    parser.add_argument("--duration", type=float, default=10, help="Seconds of load per target (default 10).")
    parser.add_argument("--repeat", type=int, default=3, help="Measurements per target; medians (default 3).")
    parser.add_argument("--warmup", type=float, default=2, help="Seconds of unmeasured load first (default 2).")
    parser.add_argument("--connections", type=int, default=4, help="Concurrent keep-alive connections (default 4).")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto", help="Load generator.")
    environment.add_database_url_argument(parser)
    args = parser.parse_args()
    if args.duration <= 0 or args.connections < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--duration, --connections and --repeat must be positive, --warmup not negative")
    if not 1 <= args.limit <= 1000:
        parser.error("--limit is 1 to 1000, as the API allows")
    if args.size < 2 * args.limit:
        parser.error("--size must be at least twice --limit")
    return args


def _command() -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else Path(script.name)
    return " ".join(["python", str(shown), *sys.argv[1:]])


# --- Set-up -----------------------------------------------------------------------------------


def fill(database_url: str, size: int) -> tuple[float, int]:
    """The feed table holding `size` events, vacuumed and analysed; the seconds it took and its size."""
    started = time.perf_counter()
    with environment.connect(database_url) as conn:
        conn.execute(f"TRUNCATE {CHANGES}")
        conn.execute(FILL_SQL, {"size": size})
        conn.execute(f"VACUUM ANALYZE {CHANGES}")
        table_bytes = conn.execute("SELECT pg_total_relation_size(%s)", [CHANGES]).fetchone()[0]
    return time.perf_counter() - started, table_bytes


def _key() -> tuple[str, str]:
    """An API key of a plain user holding the two view permissions: the secret and the key id."""
    from django.contrib.auth.models import Permission, User

    from accounts.api_keys import create_key

    User.objects.filter(username=USERNAME).delete()  # an interrupted run's; its keys go with it
    user = User.objects.create_user(USERNAME)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="customers", codename__in=["view_customer", "view_customerchange"]
        )
    )
    issued = create_key(user=user, name="bench feed_api", scopes=["customers:read", "changes:read"])
    return issued.secret, issued.key.key_id


def _clean_up(database_url: str) -> None:
    with environment.connect(database_url) as conn, conn.transaction():
        conn.execute(
            "DELETE FROM accounts_requestcount WHERE key IN (SELECT 'key:' || key_id FROM accounts_apikey "
            "WHERE user_id IN (SELECT id FROM auth_user WHERE username = %s))",
            [USERNAME],
        )
        conn.execute(
            "DELETE FROM accounts_apikey WHERE user_id IN (SELECT id FROM auth_user WHERE username = %s)", [USERNAME]
        )
        conn.execute(
            "DELETE FROM auth_user_user_permissions WHERE user_id IN (SELECT id FROM auth_user WHERE username = %s)",
            [USERNAME],
        )
        conn.execute("DELETE FROM auth_user WHERE username = %s", [USERNAME])
        conn.execute(f"TRUNCATE {CHANGES}")


def _path(after: int, limit: int) -> str:
    return f"/api/changes?after={after}&limit={limit}"


# --- In-process: statements and where a request's time goes -----------------------------------


def measure_in_process(targets: dict[str, int], secret: str, limit: int) -> dict:
    """Per target, medians of IN_PROCESS_REPEAT requests through Django's test client (all middleware,
    the same key and throttle): the request, and its statements counted (CaptureQueriesContext) and
    timed from Python (execute and transfer); PostgreSQL's own time for the feed statement and for
    the same page without JSON."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from customers import changes

    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {secret}")
    measured = {}
    for name, after in targets.items():
        path, params = _path(after, limit), {"after": after, "limit": limit}
        assert client.get(path).status_code == 200  # the connection, the caches
        timings: dict[str, list[float]] = {
            key: [] for key in ("request_ms", "auth_ms", "feed_ms", "pg_feed_ms", "pg_rows_ms")
        }
        counts, others = set(), {}
        for _ in range(IN_PROCESS_REPEAT):
            started = time.perf_counter()
            response = client.get(path)
            timings["request_ms"].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content[:200]
            timer = _StatementTimer()
            with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(timer):
                assert client.get(path).status_code == 200
            statements = [query["sql"] for query in queries.captured_queries]
            feed = [sql for sql in statements if FEED_MARK in sql]
            counts.add((len(statements), len(feed)))
            others |= {_describe(sql): sql for sql in statements if FEED_MARK not in sql}
            timings["feed_ms"].append(sum(ms for sql, ms in timer.times if FEED_MARK in sql))
            timings["auth_ms"].append(sum(ms for sql, ms in timer.times if FEED_MARK not in sql))
            timings["pg_feed_ms"].append(_executed_ms(changes._PAGE_SQL, params))
            timings["pg_rows_ms"].append(_executed_ms(ROWS_SQL, params))
        measured[name] = {
            "statements": sorted({total for total, _ in counts}),
            "feed_statements": sorted({feed for _, feed in counts}),
            "other_statements": others,
            "response_bytes": len(response.content),
            **{key: statistics.median(values) for key, values in timings.items()},
        }
        summary = {key: value for key, value in measured[name].items() if key != "other_statements"}
        print(f"  in-process {name:<6} {summary}", flush=True)
    return measured


class _StatementTimer:
    """A connection.execute_wrapper: each statement's time from Python, execute and fetch of its rows."""

    def __init__(self):
        self.times: list[tuple[str, float]] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.times.append((sql, (time.perf_counter() - started) * 1000))


def _describe(sql: str) -> str:
    """What a statement touches: its tables and the functions of migrations it calls."""
    tables = dict.fromkeys(re.findall(r'(?:FROM|JOIN) "?([a-z_]+)"?', sql))
    functions = dict.fromkeys(re.findall(r"\b([a-z]+_[a-z_]+)\(", sql))
    return f"tables {', '.join(tables)}; functions {', '.join(functions) or 'none'}"


def _executed_ms(sql: str, params: dict) -> float:
    """PostgreSQL's own execution time of `sql` (EXPLAIN ANALYZE without per-node timing): no transfer, no client."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Execution Time"]


# --- Served: one gunicorn worker under load ---------------------------------------------------


def measure_served(targets, secret: str, key_id: str, tool: str, args, env: dict, database_url: str) -> dict:
    log = RESULTS / "logs" / "feed_api.log"
    # One worker, whatever GUNICORN_WORKERS says: the command line wins over config/gunicorn.py.
    gunicorn_args = ["-c", "config/gunicorn.py", "--workers", "1", "config.wsgi:application"]
    paths = {name: [_path(after, args.limit)] for name, after in targets.items()}
    client_requests = 0
    with (
        servers.gunicorn(gunicorn_args, env=env, log=log) as url,
        environment.connect(database_url) as monitor,
    ):
        hits_before = monitor.execute(HITS_SQL, [f"key:{key_id}"]).fetchone()[0]
        pages = {name: _check(url + paths[name][0], secret, after, args.limit) for name, after in targets.items()}
        client_requests += len(pages)
        runs: dict[str, list[dict]] = {name: [] for name in TARGETS}
        # Targets take turns within each repeat, so a noisy minute does not hit only one of them.
        for repeat in range(args.repeat):
            for name in TARGETS:
                warm = read_api.load(tool, url, paths[name], secret, args.warmup, args.connections, scheme="Bearer")
                before = _cpu_snapshot()
                figures = read_api.load(
                    tool, url, paths[name], secret, args.duration, args.connections, scheme="Bearer"
                )
                figures["cpu_percent"] = _cpu_percent(before, _cpu_snapshot())
                figures["events_per_second"] = figures["requests_per_second"] * pages[name]["events"]
                client_requests += warm.get("requests", 0) + figures["requests"]
                runs[name].append(figures)
                cpu = figures["cpu_percent"]
                print(
                    f"  {repeat + 1}/{args.repeat} {name:<6} {figures['requests_per_second']:7.1f} req/s "
                    f"{figures['events_per_second']:9,.0f} events/s  p50 {figures['p50_ms']:7.2f} ms  "
                    f"p99 {figures['p99_ms']:7.2f} ms  non-2xx {figures['non2xx']}  CPU % gunicorn "
                    f"{cpu['gunicorn']:.0f} postgres {cpu['postgres']:.0f} client {cpu['client']:.0f}",
                    flush=True,
                )
        throttle_counted = monitor.execute(HITS_SQL, [f"key:{key_id}"]).fetchone()[0] - hits_before
    measured: dict = {"throttle_counted": throttle_counted, "client_requests": client_requests}
    for name in TARGETS:
        measured[name] = {
            **pages[name],
            "requests_per_second": report.median(run["requests_per_second"] for run in runs[name]),
            "events_per_second": report.median(run["events_per_second"] for run in runs[name]),
            "p50_ms": report.median(run["p50_ms"] for run in runs[name]),
            "p99_ms": report.median(run["p99_ms"] for run in runs[name]),
            "non2xx": sum(run["non2xx"] for run in runs[name]),
            "cpu_percent": {
                part: report.median(run["cpu_percent"][part] for run in runs[name])
                for part in ("gunicorn", "postgres", "client")
            },
            "runs": runs[name],
        }
    return measured


def _check(url: str, secret: str, after: int, limit: int) -> dict:
    """Fail early unless the page is the `limit` events after `after`, in order; its size."""
    response = requests.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    body = response.json()
    cursors = [event["cursor"] for event in body["data"]]
    if cursors != list(range(after + 1, after + 1 + limit)) or body["next"] != after + limit:
        raise RuntimeError(f"GET {url}: not the {limit} events after {after} (next {body['next']})")
    return {"events": len(cursors), "response_bytes": len(response.content)}


def _cpu_snapshot() -> dict:
    """CPU seconds so far, with the wall clock, of: the gunicorn processes (our descendants), every
    PostgreSQL process on this host (backends come and go with DJANGO_CONN_MAX_AGE: the time of
    those that ended is in the postmaster's children's time), and the load generator (this process
    and its waited-for children, i.e. wrk)."""
    processes = _processes()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall": time.monotonic(),
        "gunicorn": sum(processes[pid][2] for pid in _descendants(os.getpid(), processes)),
        "postgres": sum(cpu for comm, _, cpu in processes.values() if comm == "postgres"),
        "client": time.process_time() + children.ru_utime + children.ru_stime,
    }


def _cpu_percent(before: dict, after: dict) -> dict[str, float]:
    """Each part's CPU over the interval, in % of one core (this machine has os.cpu_count() of them)."""
    wall = after["wall"] - before["wall"]
    return {part: (after[part] - before[part]) / wall * 100 for part in ("gunicorn", "postgres", "client")}


def _processes() -> dict[int, tuple[str, int, float]]:
    """Every process: its name, its parent, and the CPU seconds of it and of its children it waited for."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name, _, rest = text.partition("(")[2].rpartition(")")
        fields = rest.split()
        # After the name: state, ppid, ... utime (11), stime, cutime, cstime (14), in clock ticks.
        found[int(entry.name)] = (name, int(fields[1]), sum(int(value) for value in fields[11:15]) / TICK)
    return found


def _descendants(root: int, processes: dict[int, tuple[str, int, float]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


# --- Report -----------------------------------------------------------------------------------


def render(
    args, env: dict, targets: dict, in_process: dict, served: dict, fill_seconds: float, table_bytes: int
) -> str:
    threads = env.get("GUNICORN_THREADS", "4")
    text = (
        f"Change feed of {args.size:,} events ({table_bytes / 2**20:,.0f} MiB with indexes, filled in SQL in "
        f"{fill_seconds:.0f} s, then VACUUM ANALYZE), pages of limit={args.limit}. Served by 1 gunicorn worker "
        f"of {threads} threads (config/gunicorn.py, DEBUG off), API key authentication; throttling on as shipped, "
        f"its rate raised with API_THROTTLE_CHANGES={env['API_THROTTLE_CHANGES']} so it counts every request and "
        f"refuses none (it counted {served['throttle_counted']:,} requests; the clients completed "
        f"{served['client_requests']:,}). Medians of {args.repeat} measurements of {args.duration:g} s per target, "
        f"each after {args.warmup:g} s of warm-up; {args.connections} connections.\n\n"
    )
    rows = []
    for name in TARGETS:
        figures = served[name]
        rows.append(
            (
                name,
                targets[name],
                figures["events"],
                round(figures["response_bytes"] / 1024),
                round(figures["requests_per_second"], 1),
                round(figures["events_per_second"]),
                figures["p50_ms"],
                figures["p99_ms"],
                figures["non2xx"],
                figures["events_per_second"] >= TARGET_EVENTS_PER_SECOND,
            )
        )
    headers = ("target", "after", "events/page", "KiB/page", "req/s", "events/s", "p50 ms", "p99 ms", "non-2xx")
    text += report.table((*headers, f">= {TARGET_EVENTS_PER_SECOND:,} events/s"), rows)
    start = served["start"]["p50_ms"]
    text += (
        f"\n\np50 end / start: {served['end']['p50_ms'] / start:.2f}; middle / start: "
        f"{served['middle']['p50_ms'] / start:.2f} (keyset, no OFFSET: ~1)\n\n"
    )
    cores = os.cpu_count()
    cpu_rows = [
        (name, *(served[name]["cpu_percent"][part] for part in ("gunicorn", "postgres", "client"))) for name in TARGETS
    ]
    text += f"CPU during the load, % of one core ({cores} cores: {cores * 100} % in all), medians:\n\n"
    text += report.table(
        ("target", "gunicorn (1 worker)", "PostgreSQL (all its processes)", "load generator"), cpu_rows
    )
    text += (
        f"\n\nIn-process (Django's test client, same key and throttle), medians of {IN_PROCESS_REPEAT} requests: "
        "the SQL statements of one request (CaptureQueriesContext); the authentication and feed statements timed "
        "from Python (execute and transfer); PostgreSQL's own execution time (EXPLAIN ANALYZE) of the feed "
        "statement, which builds the JSON, and of the same page as plain rows; the whole request.\n\n"
    )
    process_rows = [
        (
            name,
            "/".join(str(count) for count in figures["statements"]),
            "/".join(str(count) for count in figures["feed_statements"]),
            figures["auth_ms"],
            figures["feed_ms"],
            figures["pg_feed_ms"],
            figures["pg_rows_ms"],
            figures["request_ms"],
            figures["request_ms"] - figures["auth_ms"] - figures["feed_ms"],
        )
        for name, figures in in_process.items()
    ]
    headers = (
        "target",
        "SQL statements",
        "of them feed",
        "auth statement ms",
        "feed statement ms",
        "PG: feed (JSON) ms",
        "PG: rows only ms",
        "request ms",
        "rest of request ms",
    )
    text += report.table(headers, process_rows)
    others = {description for figures in in_process.values() for description in figures["other_statements"]}
    text += "\n\nThe statements besides the feed's: " + "; ".join(f"[{description}]" for description in sorted(others))
    return text


if __name__ == "__main__":
    main()
