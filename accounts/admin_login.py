"""The admin site, with the lockout on its login form: a locked username or address is refused
with a message and a 429 before the password is checked; every refused login is counted."""

import math

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_variables

from accounts import lockout
from accounts.client_address import client_address


class LockoutAuthenticationForm(AdminAuthenticationForm):
    retry_after = 0

    @sensitive_variables()
    def clean(self):
        username = self.cleaned_data.get("username")
        address = client_address(self.request)
        self.retry_after = lockout.retry_after(address=address, username=username)
        if self.retry_after:
            minutes = math.ceil(self.retry_after / 60)
            wait = ngettext("Try again in %(minutes)d minute.", "Try again in %(minutes)d minutes.", minutes)
            raise ValidationError(
                _("Too many failed login attempts for this username or from this address.") + " " + wait,
                code="locked_out",
                params={"minutes": minutes},
            )
        try:
            return super().clean()
        except ValidationError:
            # Also a right password refused to a non-staff or inactive user: were it not
            # counted, the lockout would tell right passwords from wrong ones.
            lockout.record_failure(door="admin", address=address, username=username)
            raise


class AdminSite(admin.AdminSite):
    login_form = LockoutAuthenticationForm

    def login(self, request, extra_context=None):
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if isinstance(form, LockoutAuthenticationForm) and form.retry_after:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response
