"""docs/examples/follow_changes.py, the consumer loop the README shows, run against a live server."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from accounts import api_keys
from tests.customers.test_changes import _ingest
from tests.records import record, records

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "follow_changes.py"

pytestmark = pytest.mark.django_db(transaction=True)


def _follow(live_server, key: str, state: Path) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), live_server.url, key, str(state), "--once"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_readme_shows_the_example_as_it_is():
    assert EXAMPLE.read_text().strip() in (ROOT / "README.md").read_text()


def test_the_example_follows_the_feed_and_resumes_from_its_stored_cursor(live_server, tmp_path):
    user = User.objects.create_superuser("consumer", password="unused")
    key = api_keys.create_key(user=user, name="feed", scopes=["customers:read", "changes:read"]).secret
    state = tmp_path / "feed.cursor"
    _ingest(records(3))
    first = _follow(live_server, key, state)
    assert [(e["cursor"], e["kind"]) for e in first] == [(1, "inserted"), (2, "inserted"), (3, "inserted")]
    assert state.read_text() == "3"
    # Stopped (or crashed after storing its cursor), started again: only what is new.
    _ingest([record(0, first_name="Renamed"), *records(1, start=5)])
    again = _follow(live_server, key, state)
    assert [(e["cursor"], e["kind"], e["changed_fields"]) for e in again] == [
        (4, "updated", ["first_name"]),
        (5, "inserted", [*first[0]["changed_fields"]]),
    ]
    assert _follow(live_server, key, state) == []
