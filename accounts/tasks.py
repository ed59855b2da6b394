"""The upkeep of the lockout and throttle tables, on the procrastinate worker the pipeline already runs."""

import logging

from django.db import close_old_connections, connection
from procrastinate.contrib.django import app

from accounts import lockout, throttling

logger = logging.getLogger(__name__)


# Hourly: the lockout table gains a row per address and window under an attack from many
# addresses, the throttle table a row per active caller, scope and window (a minute by default).
@app.periodic(cron="41 * * * *")
@app.task(name="accounts.prune", queue="accounts", queueing_lock="accounts-prune")
def prune_job(timestamp: int) -> None:
    """Delete lockout rows whose window and lockout are over, and throttle counters of windows that are over."""
    # Sync jobs run on pool threads, each with its own Django connection that nothing else closes.
    close_old_connections()
    try:
        logger.info("auth failures pruned: %d rows", lockout.prune())
        logger.info("request counts pruned: %d rows", throttling.prune())
    finally:
        connection.close()
