"""Liveness and readiness endpoints, outside authentication: load balancers call them."""

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def health(request):
    """Liveness: the process answers. It touches nothing else."""
    return JsonResponse({"status": "ok", "service": "api"})


@require_GET
def ready(request):
    """Readiness: the database (which also holds the task queue) answers a query."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM procrastinate_jobs LIMIT 1")
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JsonResponse({"status": "unavailable", "database": type(exc).__name__}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "queue": "ok"})
