"""gunicorn settings for mocksource: `gunicorn -c mocksource/gunicorn.py mocksource.server:application`.

Threaded workers keep connections alive between requests, as a real upstream behind a
load balancer does; gunicorn's default sync worker closes every connection, so a client
would open one per page. On this project's benchmark machine both serve about 1,300
pages of 100 records a second to four client threads, bounded by the client's own JSON
parsing (`bench/mocksource.py`, docs/benchmarks.md). Command-line options (`--bind`,
`--workers`) override what is set here.
"""

import os

bind = os.environ.get("MOCKSOURCE_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("MOCKSOURCE_WORKERS", "2"))
worker_class = "gthread"
threads = 4
keepalive = 30
# Two gunicorn masters (mocksource and the API) would share the one default socket path.
control_socket_disable = True
