"""Real procrastinate worker processes for tests, pointed at the test database."""

import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from config import processes
from ingestion import tasks
from tests.database import subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]


def worker_process(**env) -> subprocess.Popen:
    """Start `manage.py procrastinate worker` on the ingestion queue, against this test's database."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "INGESTION_", "OTEL_"))},
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": subprocess_database_url(),
        # The ports this test allows (a test upstream's own), as the worker reads them.
        "INGESTION_ALLOWED_PORTS": ",".join(str(port) for port in settings.INGESTION_ALLOWED_PORTS),
        **env,
    }
    command = [sys.executable, "manage.py", "procrastinate", "worker", "--queues", tasks.QUEUE]
    command += ["--no-listen-notify", "--fetch-job-polling-interval", "0.2"]
    return processes.start(command, cwd=ROOT, env=environment, quiet=True)


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
