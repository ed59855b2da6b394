from django.contrib.auth.models import User
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from rest_framework.authtoken.models import TokenProxy


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
    # "key:<key id>", "user:<id>" or "address:<client address>" (accounts/throttling.py).
    key = models.CharField(max_length=64)
    window_start = models.DateTimeField()
    # Kept on the row so the prune needs no rates: a row is over once its window has ended.
    window_end = models.DateTimeField()
    hits = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.scope} {self.key}: {self.hits} requests from {self.window_start:%Y-%m-%d %H:%M:%S}"


class Scope(models.TextChoices):
    """What an API key may do; accounts/api_keys.py maps each scope onto the permissions it lends."""

    CUSTOMERS_READ = "customers:read"
    RUNS_READ = "runs:read"
    INGESTION_RUN = "ingestion:run"
    CHANGES_READ = "changes:read"
    CUSTOMERS_ERASE = "customers:erase"


class KeyUser(User):
    """A user as one of its API keys acts: with only the permissions of the key's scopes that the
    user holds (a superuser's key too), set by the key's authentication; none until then."""

    key_permissions: frozenset[str] = frozenset()

    class Meta:
        proxy = True

    def has_perm(self, perm, obj=None) -> bool:
        return self.is_active and obj is None and perm in self.key_permissions

    def has_perms(self, perm_list, obj=None) -> bool:
        return all(self.has_perm(perm, obj) for perm in perm_list)

    def has_module_perms(self, app_label) -> bool:
        return self.is_active and any(perm.startswith(f"{app_label}.") for perm in self.key_permissions)

    def get_all_permissions(self, obj=None) -> set[str]:
        return set(self.key_permissions) if self.is_active and obj is None else set()


class ApiKey(models.Model):
    """An API key: `cdp_<key_id>_<secret>`, of which only the SHA-256 of the whole key is kept.

    Written only by accounts/api_keys.py. A key is refused once `expires_at` has passed or
    `revoked_at` is set; rotating shortens the old key's expiry to the overlap window.
    """

    # Public (it is in the key and in every list): the lookup's unique index, and the throttle's key.
    key_id = models.CharField(max_length=12, unique=True)
    secret_hash = models.CharField(max_length=64)
    name = models.CharField(max_length=100)
    # The proxy, so the authenticating query's select_related hands out users whose permissions are the key's.
    user = models.ForeignKey(KeyUser, on_delete=models.CASCADE, related_name="api_keys")
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices))
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rotated_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("created_at")), name="apikey_expires_after_created"
            ),
            models.CheckConstraint(
                condition=Q(scopes__len__gt=0) & Q(scopes__contained_by=Scope.values), name="apikey_known_scopes"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (cdp_{self.key_id}_…)"


class LegacyToken(TokenProxy):
    """A DRF token as the admin shows it: named by its user, never by the key it is stored as
    (DRF's names it by its key, which the admin's titles and its change log would repeat)."""

    class Meta:
        proxy = True
        verbose_name = "legacy token"

    def __str__(self) -> str:
        return f"legacy token of {self.user}"
