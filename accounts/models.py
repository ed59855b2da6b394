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
