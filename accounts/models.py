from django.db import models


class AuthFailureKind(models.TextChoices):
    USERNAME = "username"
    ADDRESS = "address"


class AuthFailure(models.Model):
    """Failed sign-ins of one username or from one client address within one window.

    Written only by accounts/lockout.py, one upsert per failure; `locked_until` is set by
    the failure that reaches the limit.
    """

    kind = models.CharField(max_length=16, choices=AuthFailureKind.choices)
    key = models.CharField(max_length=150)
    window_start = models.DateTimeField()
    failures = models.PositiveIntegerField()
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The upsert's conflict target; its (kind, key) prefix also serves the lockout read.
            models.UniqueConstraint(fields=["kind", "key", "window_start"], name="authfailure_one_row_per_window"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.failures} failures from {self.window_start:%Y-%m-%d %H:%M}"


class RequestCount(models.Model):
    """Throttled API requests of one caller in one scope within one fixed window.

    Written only by accounts/throttling.py, one upsert per request; the table is UNLOGGED
    (migration 0002): a crash may empty it, which only forgets some requests.
    """

    # The upsert's conflict target, so a request needs no id from a sequence.
    pk = models.CompositePrimaryKey("scope", "key", "window_start")
    scope = models.CharField(max_length=32)
    # "user:<id>" or "address:<client address>" (accounts/throttling.py).
    key = models.CharField(max_length=64)
    window_start = models.DateTimeField()
    # Kept on the row so the prune needs no rates: a row is over once its window has ended.
    window_end = models.DateTimeField()
    hits = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.scope} {self.key}: {self.hits} requests from {self.window_start:%Y-%m-%d %H:%M:%S}"
