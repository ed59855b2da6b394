"""Deployment checks of ingestion's settings (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def suppression_key_is_set(app_configs, **kwargs):
    """Erased customers' ids are kept as hashes keyed with INGESTION_SUPPRESSION_KEY: derived from the
    secret key when unset, so rotating DJANGO_SECRET_KEY would lift every suppression."""
    if settings.INGESTION_SUPPRESSION_KEY:
        return []
    return [
        Warning(
            "INGESTION_SUPPRESSION_KEY is not set: erased customers' ids are hashed with a key derived from "
            "DJANGO_SECRET_KEY, so rotating that key would let erased customers come back with the next ingestion.",
            hint="Set INGESTION_SUPPRESSION_KEY to a long random string, apart from DJANGO_SECRET_KEY, and keep it.",
            id="ingestion.W001",
        )
    ]
