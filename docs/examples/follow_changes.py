"""Follow the change feed: every change once, in order, resuming after a crash from the stored cursor."""

import json
import pathlib
import sys
import time

import requests

BASE, KEY, STATE = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])  # http://127.0.0.1:8000 cdp_... feed.cursor
session = requests.Session()
session.headers["Authorization"] = f"Bearer {KEY}"
after = int(STATE.read_text()) if STATE.exists() else 0
while True:
    response = session.get(f"{BASE}/api/changes", params={"after": after, "limit": 1000}, timeout=30)
    if response.status_code == 410:  # fell behind retention: rebuild from GET /api/customers, then ?after=latest
        sys.exit(response.json()["detail"])
    response.raise_for_status()
    page = response.json()
    for event in page["data"]:  # apply: upsert event["customer"]; drop the id on deleted/erased
        print(json.dumps(event), flush=True)
    STATE.write_text(str(page["next"]))  # keep it with what you applied; a crash here replays one page
    after = page["next"]
    if not page["data"]:
        if "--once" in sys.argv:  # caught up: stop (cron, tests)
            break
        time.sleep(5)
