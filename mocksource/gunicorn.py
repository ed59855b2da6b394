"""gunicorn settings for mocksource: `gunicorn -c mocksource/gunicorn.py mocksource.server:application`.

Threaded workers keep connections alive between requests, as a real upstream behind a
load balancer does: with gunicorn's default sync worker every page would cost the client
a new TCP connection (a sixth of its CPU per page, measured in docs/benchmarks.md).
Command-line options (`--bind`, `--workers`) override what is set here.
"""

import os

bind = os.environ.get("MOCKSOURCE_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("MOCKSOURCE_WORKERS", "2"))
worker_class = "gthread"
threads = 4
keepalive = 30
# Two gunicorn masters (mocksource and the API) would share the one default socket path.
control_socket_disable = True
