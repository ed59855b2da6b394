"""API keys in the admin: listed, rotated and revoked, never created here (a new key's secret is
shown once, by `manage.py api_keys create`), and never showing the secret's hash. A rotation
shows its new keys once, on the page the action returns, which nothing caches or stores."""

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from django.utils.translation import ngettext
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from accounts import api_keys
from accounts.models import ApiKey, LegacyToken


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "shown_key", "user", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["name", "key_id", "user__username"]
    list_select_related = ["user"]
    show_full_result_count = False
    # Everything but the hash, read-only: a key's secret cannot be changed, only the key revoked.
    fields = ["name", "shown_key", "user", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["rotate", "revoke"]

    @admin.display(description="key", ordering="key_id")
    def shown_key(self, key: ApiKey) -> str:
        return f"{api_keys.PREFIX}{key.key_id}_…"

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = api_keys.revoke_keys(queryset)
        self.message_user(
            request, ngettext("%d API key revoked.", "%d API keys revoked.", count) % count, messages.SUCCESS
        )

    @admin.action(description="Rotate selected API keys (the old ones work for the overlap)", permissions=["change"])
    def rotate(self, request, queryset):
        rotated, refused = [], []
        for key in queryset.select_related("user").order_by("pk"):
            try:
                rotated.append((key, api_keys.rotate_key(key)))
            except api_keys.KeyRefused as refusal:
                refused.append(str(refusal))
        for sentence in refused:
            self.message_user(request, sentence, messages.ERROR)
        if not rotated:
            return None
        response = TemplateResponse(
            request,
            "admin/accounts/apikey/rotated.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": ngettext("%d API key rotated", "%d API keys rotated", len(rotated)) % len(rotated),
                "rotated": rotated,
            },
        )
        # The secrets are on this page only: no browser or proxy cache keeps a copy.
        add_never_cache_headers(response)
        return response

    def has_add_permission(self, request) -> bool:
        return False


# DRF's own page lists every token in clear (they are stored in clear), which lets anyone who
# can read the admin act as any token's user. Replaced by LegacyToken's (rest_framework.authtoken
# is installed before accounts, so its registration comes first).
admin.site.unregister(TokenProxy)


@admin.register(LegacyToken)
class LegacyTokenAdmin(TokenAdmin):
    """DRF's legacy tokens: listed by owner so they can be deleted, never shown, never added
    (new clients get API keys)."""

    list_display = ("user", "created")
    fields = ("user", "created")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
