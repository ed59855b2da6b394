"""Create (or find) a user and give it a new API key, printed once, as `key: value` lines.

No DRF token is created or printed any more: those are stored in clear, and printing an
existing one again showed a long-lived secret to whoever ran the command.
"""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser, Permission
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import api_keys
from accounts.models import ApiKey, Scope

DEFAULT_KEY_NAME = "create_api_token"
# What a staff account needs to read the pipeline's data and start runs, and nothing more.
STAFF_PERMISSIONS = (
    ("customers", "view_customer"),
    ("ingestion", "view_ingestrun"),
    ("ingestion", "view_ingestfailure"),
    ("ingestion", "start_ingestion"),
)


class Command(BaseCommand):
    help = (
        "Create USERNAME if missing (with a random password, printed once) and give it a new API key "
        "named NAME, with every scope (a key never has a permission its user lacks). The user's earlier "
        "keys of that name are revoked, so running it again replaces the key. --superuser and --staff "
        "grant those roles, also to an existing user. Output: `username: ...`, `password: ...` (only "
        "when created), `key: cdp_...` (shown once: only its hash is kept) and `expires: ...` lines."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", help="The account's username.")
        role = parser.add_mutually_exclusive_group()
        role.add_argument("--superuser", action="store_true", help="Make the account a superuser.")
        role.add_argument(
            "--staff",
            action="store_true",
            help="Make the account staff, allowed to view customers and ingestion runs and to start runs.",
        )
        parser.add_argument("--name", default=DEFAULT_KEY_NAME, help=f"The key's name (default {DEFAULT_KEY_NAME!r}).")

    def handle(self, *args, username: str, superuser: bool, staff: bool, name: str, **options):
        username = _clean_username(username)
        with transaction.atomic():
            user, password = _get_or_create_user(username)
            if superuser:
                _make_superuser(user)
            elif staff:
                _make_staff(user)
            api_keys.revoke_keys(ApiKey.objects.filter(user_id=user.pk, name=name))
            try:
                issued = api_keys.create_key(user=user, name=name, scopes=Scope.values)
            except api_keys.KeyRefused as refusal:
                raise CommandError(str(refusal)) from None
        self.stdout.write(f"username: {user.get_username()}")
        if password is not None:
            self.stdout.write(f"password: {password}")
        self.stdout.write(f"key: {issued.secret}")
        self.stdout.write(f"expires: {issued.key.expires_at:%Y-%m-%dT%H:%M:%SZ}")


def _clean_username(username: str) -> str:
    """The username as the user model would store it, or a CommandError saying why not."""
    user_model = get_user_model()
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        return field.clean(user_model.normalize_username(username), None)
    except ValidationError as error:
        raise CommandError(f"{username!r} is not a valid username: {' '.join(error.messages)}") from None


def _get_or_create_user(username: str) -> tuple[AbstractBaseUser, str | None]:
    """The existing user and None, or a new user and its random password."""
    user_model = get_user_model()
    user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    if user is not None:
        return user, None
    password = _new_password(user_model(**{user_model.USERNAME_FIELD: username}))
    return user_model._default_manager.create_user(username, password=password), password


def _new_password(user: AbstractBaseUser) -> str:
    """A random password the configured validators accept (checked: create_user does not)."""
    length = max(24, settings.ACCOUNTS_PASSWORD_MIN_LENGTH)
    for _ in range(3):
        password = secrets.token_urlsafe(length)[:length]
        try:
            password_validation.validate_password(password, user)
        except ValidationError:
            # Random characters rarely fail (all digits, too like the username): draw again.
            continue
        return password
    raise CommandError("Could not generate a password the password validators accept; set one with `changepassword`.")


def _make_superuser(user: AbstractBaseUser) -> None:
    user.is_staff = True
    user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])


def _make_staff(user: AbstractBaseUser) -> None:
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(*_staff_permissions())


def _staff_permissions() -> list[Permission]:
    permissions = [
        Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        for app_label, codename in STAFF_PERMISSIONS
    ]
    if None in permissions:
        # Permissions are created by `migrate` (post_migrate), so a fresh database lacks them.
        raise CommandError("The staff permissions do not exist yet. Run `python manage.py migrate` first.")
    return permissions
