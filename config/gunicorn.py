"""gunicorn settings for the API: `gunicorn -c config/gunicorn.py config.wsgi:application`.

gunicorn loads this file in its master process, before and apart from Django, so it
reads os.environ itself, through config/env.py (which needs no Django set-up);
config/settings/base.py stays the only application module that does. Command-line
options override what is set here.
"""

import glob
import os

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

from config.env import env_bool, env_int
from config.logging import printable


class AccessLogger(Logger):
    """gunicorn's logger with every text atom of the access log escaped and cut (config/logging.py).

    gunicorn only escapes double quotes, and %(U)s is the percent-decoded path: a request
    for /x%0AGET%20/admin would otherwise write a second, made-up line.
    """

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: printable(value) if isinstance(value, str) else value for key, value in atoms.items()}


bind = os.environ.get("API_BIND", "127.0.0.1:8000")
# WEB_CONCURRENCY is gunicorn's own variable (docker-compose.yml sets it); ours comes first.
workers = env_int("GUNICORN_WORKERS", env_int("WEB_CONCURRENCY", 2, minimum=1), minimum=1)
# POST /api/ingest?wait=N holds its request for minutes: threads (the gthread worker)
# keep each process answering meanwhile.
threads = env_int("GUNICORN_THREADS", 4, minimum=1)
# Each worker listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections
# over them: on one shared socket, whichever worker wakes first takes a burst of keep-alive
# connections and keeps them, and 16 clients were seen split 16/0 (docs/benchmarks.md).
reuse_port = env_bool("GUNICORN_REUSE_PORT", True)
accesslog = "-"
# The path without its query string: searches carry names and emails. No client address either.
access_log_format = '%(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
logger_class = AccessLogger
# Nothing here uses gunicornc; and two masters would share the one default socket path.
control_socket_disable = True

# prometheus_client reads this variable itself: when it is set, every worker writes its
# request metrics to files there and /metrics merges them (see docs/observability.md).
METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def on_starting(server):
    """Start with an empty metrics directory: an earlier server's files would be merged into this one's figures."""
    if METRICS_DIR:
        os.makedirs(METRICS_DIR, exist_ok=True)
        for path in glob.glob(os.path.join(METRICS_DIR, "*.db")):
            os.remove(path)


def child_exit(server, worker):
    """Let the metrics of a worker that exited stop counting as a live process."""
    if METRICS_DIR:
        multiprocess.mark_process_dead(worker.pid, METRICS_DIR)
