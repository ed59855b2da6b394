"""Real procrastinate worker processes for tests, pointed at the test database."""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from django.db import connection

from ingestion import tasks

ROOT = Path(__file__).resolve().parents[2]


def worker_process(**env) -> subprocess.Popen:
    """Start `manage.py procrastinate worker` on the ingestion queue, against this test's database."""
    db = connection.settings_dict
    query = urlencode({"host": db["HOST"] or "localhost", "port": db["PORT"] or 5432})
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "INGESTION_"))},
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgresql://{quote(db['USER'] or '')}@/{db['NAME']}?{query}",
        **env,
    }
    command = [sys.executable, "manage.py", "procrastinate", "worker", "--queues", tasks.QUEUE]
    command += ["--no-listen-notify", "--fetch-job-polling-interval", "0.2"]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
