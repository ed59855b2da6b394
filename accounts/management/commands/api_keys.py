"""Create, list, rotate and revoke API keys; a key's secret is printed once, when it is made."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import api_keys
from accounts.models import ApiKey, Scope

_TIME = "%Y-%m-%dT%H:%M:%SZ"


class Command(BaseCommand):
    help = (
        "Manage API keys. `create USERNAME --name NAME [--scope SCOPE ...] [--days N]` and "
        "`rotate KEY_ID [--overlap-hours H]` print `key: cdp_...` once (only its hash is kept); "
        "`list` shows keys without secrets; `revoke KEY_ID` refuses a key at once."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="A new key for USERNAME.")
        create.add_argument("username")
        create.add_argument("--name", required=True, help="What the key is for, e.g. 'nightly-export'.")
        create.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=Scope.values,
            help="Repeatable; default: customers:read and runs:read (read-only).",
        )
        create.add_argument("--days", type=int, help="Days until it expires (default ACCOUNTS_API_KEY_DAYS).")
        listing = actions.add_parser("list", help="Every key, without secrets.")
        listing.add_argument("--user", help="Only this user's keys.")
        rotate = actions.add_parser("rotate", help="A successor key; the old one works for the overlap.")
        rotate.add_argument("key_id")
        rotate.add_argument("--overlap-hours", type=int, help="Default ACCOUNTS_API_KEY_OVERLAP_HOURS.")
        rotate.add_argument("--days", type=int, help="Days until the new key expires.")
        revoke = actions.add_parser("revoke", help="Refuse the key from now on.")
        revoke.add_argument("key_id")

    def handle(self, *args, action: str, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except api_keys.KeyRefused as refused:
            raise CommandError(str(refused)) from None

    def _create(self, *, username: str, name: str, scopes: list[str] | None, days: int | None, **options):
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        scopes = scopes or [Scope.CUSTOMERS_READ, Scope.RUNS_READ]
        self._print_issued(api_keys.create_key(user=user, name=name, scopes=scopes, days=days))

    def _list(self, *, user: str | None, **options):
        keys = ApiKey.objects.select_related("user").order_by("user__username", "name", "created_at")
        for key in keys.filter(user__username=user) if user else keys:
            used = f"{key.last_used_at:{_TIME}}" if key.last_used_at else "never"
            scopes = ",".join(key.scopes)
            self.stdout.write(
                f"{key.key_id}  {_status(key)}  {key.user.get_username()}  {key.name}  {scopes}  "
                f"expires {key.expires_at:{_TIME}}  last used {used}"
            )

    def _rotate(self, *, key_id: str, overlap_hours: int | None, days: int | None, **options):
        old = _key(key_id)
        overlap = None if overlap_hours is None else timedelta(hours=overlap_hours)
        self._print_issued(api_keys.rotate_key(old, overlap=overlap, days=days))
        self.stdout.write(f"rotated: {old.key_id}")
        self.stdout.write(f"old key expires: {old.expires_at:{_TIME}}")

    def _revoke(self, *, key_id: str, **options):
        api_keys.revoke_keys(ApiKey.objects.filter(pk=_key(key_id).pk))
        self.stdout.write(f"revoked: {key_id}")

    def _print_issued(self, issued: api_keys.IssuedKey) -> None:
        key = issued.key
        self.stdout.write(f"id: {key.key_id}")
        self.stdout.write(f"name: {key.name}")
        self.stdout.write(f"user: {key.user.get_username()}")
        self.stdout.write(f"scopes: {' '.join(key.scopes)}")
        self.stdout.write(f"expires: {key.expires_at:{_TIME}}")
        self.stdout.write(f"key: {issued.secret}")


def _key(key_id: str) -> ApiKey:
    key = ApiKey.objects.filter(key_id=key_id).first()
    if key is None:
        raise CommandError(f"No API key {key_id!r}.")
    return key


def _status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    return "expired" if key.expires_at <= api_keys.now() else "active"
