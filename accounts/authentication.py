"""API authentication with the lockout: failed credentials count per client address, and a locked
address is answered 429 before its credentials are looked at.

Two schemes: API keys (`Authorization: Bearer cdp_...`, accounts/api_keys.py) and, while
ACCOUNTS_LEGACY_TOKENS is on, DRF's tokens (`Authorization: Token <key>`).
"""

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, TokenAuthentication, get_authorization_header

from accounts import api_keys, lockout
from accounts.client_address import client_address
from accounts.throttling import ScopedWindowThrottle
from accounts.windows import seconds_until


class AddressLocked(exceptions.Throttled):
    default_detail = _("Too many failed authentication attempts from this address.")
    default_code = "locked_out"


class _Retired(exceptions.AuthenticationFailed):
    default_detail = _(
        "Token keys are no longer accepted: create an API key (manage.py api_keys create) "
        "and send 'Authorization: Bearer cdp_<key id>_<secret>'."
    )


class _CountsFailures(BaseAuthentication):
    """Counts every AuthenticationFailed of `check` against the client address. Requests
    without these credentials cost nothing."""

    def authenticate(self, request):
        # DRF makes one authenticator per request, so the address can be kept on it.
        self.address = client_address(request)
        try:
            return self.check(request)
        except (AddressLocked, _Retired):
            raise
        except exceptions.AuthenticationFailed:
            self._refuse_if_locked()
            lockout.record_failure(door="api", address=self.address)
            raise

    def check(self, request):
        raise NotImplementedError

    def _refuse_if_locked(self) -> None:
        wait = lockout.retry_after(address=self.address)
        if wait:
            raise AddressLocked(wait=wait) from None


class LockoutTokenAuthentication(_CountsFailures, TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, counting every failure (unknown token, malformed
    header, inactive user); refused, saying how to move to API keys, once legacy tokens are off."""

    def check(self, request):
        if not settings.ACCOUNTS_LEGACY_TOKENS and _scheme(request) == self.keyword.lower().encode():
            raise _Retired()  # not counted: a credential we retired, not a guess
        return TokenAuthentication.authenticate(self, request)

    def authenticate_credentials(self, key):
        # The lockout is read inside the token lookup: a successful request costs no extra statement.
        token = (
            self.get_model()
            .objects.select_related("user")
            .annotate(locked_until=lockout.locked_until(address=self.address))
            .filter(key=key)
            .first()
        )
        if token is not None and token.locked_until is not None:
            raise AddressLocked(wait=seconds_until(token.locked_until))
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)


class ApiKeyAuthentication(_CountsFailures):
    """`Authorization: Bearer cdp_<key id>_<secret>`: the key's owner, acting with the key's scopes."""

    def check(self, request):
        if _scheme(request) != b"bearer":
            return None
        parts = get_authorization_header(request).split()
        try:
            presented = parts[1].decode("ascii") if len(parts) == 2 else ""
        except UnicodeError:
            presented = ""
        # The view's throttle window, so the statement that authenticates also counts the request.
        window = ScopedWindowThrottle.window_of(request.parser_context.get("view"))
        try:
            key = api_keys.authenticate(presented, address=self.address, window=window)
        except api_keys.AddressLockedOut as locked:
            raise AddressLocked(wait=seconds_until(locked.until)) from None
        except api_keys.KeyInvalid as invalid:
            raise exceptions.AuthenticationFailed(str(invalid)) from None
        return (key.user, key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def _scheme(request) -> bytes:
    parts = get_authorization_header(request).split()
    return parts[0].lower() if parts else b""
