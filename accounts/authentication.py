"""DRF token authentication with the lockout: failed tokens count per client address, and a locked
address is answered 429 before its token is looked at."""

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts import lockout
from accounts.client_address import client_address
from accounts.windows import seconds_until


class AddressLocked(exceptions.Throttled):
    default_detail = _("Too many failed authentication attempts from this address.")
    default_code = "locked_out"


class LockoutTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, counting every failure (unknown token, malformed
    header, inactive user) against the client address. Requests without a token cost nothing."""

    def authenticate(self, request):
        # DRF makes one authenticator per request, so the address can be kept on it.
        self.address = client_address(request)
        try:
            return super().authenticate(request)
        except AddressLocked:
            raise
        except exceptions.AuthenticationFailed:
            self._refuse_if_locked()
            lockout.record_failure(door="api", address=self.address)
            raise

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

    def _refuse_if_locked(self) -> None:
        wait = lockout.retry_after(address=self.address)
        if wait:
            raise AddressLocked(wait=wait) from None
