"""API keys: created (the secret shown once), checked, rotated and revoked.

A key reads `cdp_<key id>_<secret>`: the prefix lets secret scanners and people spot a leaked
one, the key id (public, unique) finds its row by an index read, the secret is 256 random bits.
Only the SHA-256 of the whole key is stored. A fast hash is enough for 256 random bits (a slow
password hash guards guessable secrets, and would cost every request milliseconds of CPU), and it
needs no server secret, so rotating DJANGO_SECRET_KEY leaves every key working.

A key acts for its owner with only the permissions of its scopes that the owner holds
(`KeyUser`): scopes narrow the owner's permissions, they never add one.
"""

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import QuerySet
from django.utils.timezone import now

from accounts import lockout, throttling
from accounts.models import ApiKey, KeyUser, Scope
from api.statements import prepared_cursor

PREFIX = "cdp_"
KEY_FORMAT = re.compile(r"cdp_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})")
MALFORMED = "Malformed API key: send 'Authorization: Bearer cdp_<key id>_<secret>'."
_KEY_ID_ALPHABET = string.ascii_letters + string.digits
# A key used continuously writes `last_used_at` once per interval, not once per request.
LAST_USED_INTERVAL = timedelta(minutes=1)

SCOPE_PERMISSIONS: dict[str, frozenset[str]] = {
    Scope.CUSTOMERS_READ: frozenset({"customers.view_customer"}),
    Scope.RUNS_READ: frozenset(
        {"ingestion.view_ingestrun", "ingestion.view_ingestfailure", "ingestion.view_personal_data"}
    ),
    Scope.INGESTION_RUN: frozenset({"ingestion.start_ingestion"}),
    Scope.CHANGES_READ: frozenset({"customers.view_customerchange"}),
    Scope.CUSTOMERS_ERASE: frozenset({"customers.erase_customer"}),
}
_LENT = frozenset().union(*SCOPE_PERMISSIONS.values())
_USER_PERMISSIONS = KeyUser.user_permissions.through._meta.db_table
_GROUP_PERMISSIONS = Permission.group_set.through._meta.db_table
_USER_GROUPS = KeyUser.groups.through._meta.db_table


class KeyRefused(Exception):
    """A key cannot be created or rotated as asked; the message says why."""


class KeyInvalid(Exception):
    """A presented key does not authenticate; the message is the 401's detail."""


class AddressLockedOut(Exception):
    """The client address is locked out (accounts/lockout.py) until `until`."""

    def __init__(self, until: datetime):
        super().__init__(until)
        self.until = until


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # the whole `cdp_...` key: shown once, never stored


def create_key(
    *, user, name: str, scopes: list[str], days: int | None = None, rotated_from: ApiKey | None = None
) -> IssuedKey:
    """A new key for the user, valid for `days` (ACCOUNTS_API_KEY_DAYS unless given)."""
    scopes = _checked_scopes(scopes)
    days = settings.ACCOUNTS_API_KEY_DAYS if days is None else days
    if not 1 <= days <= settings.ACCOUNTS_API_KEY_MAX_DAYS:
        raise KeyRefused(f"A key is valid for 1 to at most {settings.ACCOUNTS_API_KEY_MAX_DAYS} days, not {days}.")
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(12))
    secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    moment = now()
    key = ApiKey.objects.create(
        key_id=key_id,
        secret_hash=_hash(secret),
        name=name,
        user_id=user.pk,
        scopes=scopes,
        created_at=moment,
        expires_at=moment + timedelta(days=days),
        rotated_from=rotated_from,
    )
    return IssuedKey(key=key, secret=secret)


def rotate_key(key: ApiKey, *, overlap: timedelta | None = None, days: int | None = None) -> IssuedKey:
    """A successor with the key's owner, name and scopes; the old key works for `overlap` more
    (ACCOUNTS_API_KEY_OVERLAP_HOURS unless given), or until its own expiry if that is sooner."""
    overlap = timedelta(hours=settings.ACCOUNTS_API_KEY_OVERLAP_HOURS) if overlap is None else overlap
    with transaction.atomic():
        # Locked, so two rotations of one key cannot both pass the check below.
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if old.revoked_at is not None or old.expires_at <= now():
            raise KeyRefused(f"Key {old.key_id} is revoked or expired: create a new key instead.")
        issued = create_key(user=old.user, name=old.name, scopes=old.scopes, days=days, rotated_from=old)
        old.expires_at = min(old.expires_at, now() + overlap)
        old.save(update_fields=["expires_at"])
    key.expires_at = old.expires_at
    return issued


def revoke_keys(keys: QuerySet) -> int:
    """Revoke the keys not revoked yet, at once and for good; the number revoked."""
    return keys.filter(revoked_at__isnull=True).update(revoked_at=now())


def authenticate(presented: str, *, address: str, window: throttling.Window | None = None) -> ApiKey:
    """The key, its `user` acting with the key's permissions, or KeyInvalid saying why not.

    One statement: the key by its id, its owner, the owner's lent permissions and the address's
    lockout; for a key that authenticates, it also counts the request in the throttle's
    `window` (the result is on `throttle_waits`) and, at most once per LAST_USED_INTERVAL,
    writes `last_used_at`.
    """
    match = KEY_FORMAT.fullmatch(presented)
    if match is None:
        raise KeyInvalid(MALFORMED)
    moment, presented_hash = now(), _hash(presented)
    key = _read_key(match[1], presented_hash, address=address, moment=moment, window=window)
    if key is not None and key.locked_until is not None:
        raise AddressLockedOut(key.locked_until)
    # Compared even for an unknown id, so both failures take the same path and say the same.
    if not hmac.compare_digest(presented_hash, key.secret_hash if key else ""):
        raise KeyInvalid("Invalid API key.")
    # Past the secret check, saying why helps its holder and tells an attacker nothing.
    if key.revoked_at is not None:
        raise KeyInvalid("This API key was revoked.")
    if key.expires_at <= moment:
        raise KeyInvalid(f"This API key expired at {key.expires_at:%Y-%m-%dT%H:%M:%SZ}.")
    if not key.user.is_active:
        raise KeyInvalid("User inactive or deleted.")
    key.user.key_permissions = _lent_permissions(key)
    key.throttle_waits = {window.scope: window.wait(key.throttle_hits, moment)} if window else {}
    if key.touched:
        key.last_used_at = moment
    return key


_KEY_FIELDS = ApiKey._meta.concrete_fields
# Constants of the code (no input), written into the statement: fewer parameters to send on every request.
_LENT_SQL = ", ".join(f"'{permission}'" for permission in sorted(_LENT))
_USER_FIELDS = KeyUser._meta.concrete_fields
# The statement `authenticate` sends, written out: built by the ORM (a subquery of lent permissions,
# the lockout's subquery, two guarded writes), the same query took 5 ms of Python to compile on
# every request, more than everything else the request did (docs/benchmarks.md). Its writes are
# guarded by `ok`, the checks `authenticate` makes in Python, so a refused key writes nothing: a
# wrong secret cannot spend another key's budget. The SQL comparison of hashes needs no constant
# time (it compares a SHA-256, not the secret; compare_digest decides).
_READ_KEY = f"""
SELECT {", ".join(f"k.{field.column}" for field in _KEY_FIELDS)},
       {", ".join(f"u.{field.column}" for field in _USER_FIELDS)},
       held.permissions, lock.locked_until,
       CASE WHEN ok.authenticates AND (k.last_used_at IS NULL OR k.last_used_at <= %(stale)s)
            THEN accounts_touch_key(k.id, %(moment)s, %(stale)s) ELSE false END,
       CASE WHEN ok.authenticates AND %(counted)s
            THEN accounts_count_request(
                %(scope)s, '{throttling.KEY_CALLER}' || k.key_id, %(start)s, %(end)s, %(limit)s
            ) END
FROM {ApiKey._meta.db_table} k
JOIN {KeyUser._meta.db_table} u ON u.id = k.user_id
CROSS JOIN LATERAL ({lockout.ADDRESS_LOCKED_UNTIL_SQL}) lock
CROSS JOIN LATERAL (
    SELECT k.secret_hash = %(hash)s AND k.revoked_at IS NULL AND k.expires_at > %(moment)s AND u.is_active
           AND lock.locked_until IS NULL AS authenticates
) ok
CROSS JOIN LATERAL (
    -- The owner's permissions that a scope can lend, directly or through a group, as "app.codename".
    SELECT array(
        SELECT ct.app_label || '.' || p.codename
        FROM {Permission._meta.db_table} p JOIN {ContentType._meta.db_table} ct ON ct.id = p.content_type_id
        WHERE ct.app_label || '.' || p.codename IN ({_LENT_SQL})
          AND (p.id IN (SELECT up.permission_id FROM {_USER_PERMISSIONS} up WHERE up.user_id = k.user_id)
               OR p.id IN (SELECT gp.permission_id FROM {_GROUP_PERMISSIONS} gp
                           JOIN {_USER_GROUPS} ug ON ug.group_id = gp.group_id WHERE ug.user_id = k.user_id))
    ) AS permissions
) held
WHERE k.key_id = %(key_id)s
"""


def _read_key(key_id: str, secret_hash: str, *, address: str, moment: datetime, window) -> ApiKey | None:
    """The key with its owner, `held_permissions`, `locked_until`, `touched` and `throttle_hits`, or None."""
    params = {
        "key_id": key_id,
        "hash": secret_hash,
        "moment": moment,
        "stale": moment - LAST_USED_INTERVAL,
        "address": address,
        "counted": window is not None,
        "scope": window.scope if window else None,
        "start": window.start if window else None,
        "end": window.end if window else None,
        "limit": window.limit if window else None,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_READ_KEY, params)
        row = cursor.fetchone()
    if row is None:
        return None
    keys, users = len(_KEY_FIELDS), len(_USER_FIELDS)
    key = ApiKey.from_db(DEFAULT_DB_ALIAS, [field.attname for field in _KEY_FIELDS], row[:keys])
    key.user = KeyUser.from_db(DEFAULT_DB_ALIAS, [field.attname for field in _USER_FIELDS], row[keys : keys + users])
    key.held_permissions, key.locked_until, key.touched, key.throttle_hits = row[keys + users :]
    return key


def _lent_permissions(key: ApiKey) -> frozenset[str]:
    wanted = frozenset().union(*(SCOPE_PERMISSIONS[scope] for scope in key.scopes))
    return wanted if key.user.is_superuser else wanted & frozenset(key.held_permissions)


def _checked_scopes(scopes: list[str]) -> list[str]:
    unknown = [scope for scope in scopes if scope not in Scope.values]
    if unknown:
        raise KeyRefused(f"Unknown scope: {unknown[0]!r} (known: {', '.join(Scope.values)}).")
    if not scopes:
        raise KeyRefused("A key needs at least one scope.")
    return sorted(set(scopes), key=Scope.values.index)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
