"""Liveness and readiness endpoints, outside authentication: load balancers call them."""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from config import cached


@require_GET
def health(request):
    """Liveness: the process answers. It touches nothing else."""
    return JsonResponse({"status": "ok", "service": "api"})


@require_GET
def ready(request):
    """Readiness: the database (which also holds the task queue) answered a query at most API_READY_CACHE_SECONDS ago.

    A flood gets the cached answer, never a 429: to a load balancer a 429 reads as "not ready".
    """
    status, body = cached.READY.get(check_database, seconds=settings.API_READY_CACHE_SECONDS)
    return JsonResponse(body, status=status)


def check_database() -> tuple[int, dict]:
    """One query on the queue's table: it answers only once the database is up and migrated."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM procrastinate_jobs LIMIT 1")
    except Exception as exc:  # any failure to reach the database means "not ready"
        return 503, {"status": "unavailable", "database": type(exc).__name__}
    return 200, {"status": "ok", "database": "ok", "queue": "ok"}
