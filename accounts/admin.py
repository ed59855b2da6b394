"""API keys in the admin: listed and revoked, never created here (the secret is shown once, by
`manage.py api_keys`), and never showing the secret's hash."""

from django.contrib import admin, messages
from django.utils.translation import ngettext

from accounts import api_keys
from accounts.models import ApiKey


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
    actions = ["revoke"]

    @admin.display(description="key", ordering="key_id")
    def shown_key(self, key: ApiKey) -> str:
        return f"{api_keys.PREFIX}{key.key_id}_…"

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = api_keys.revoke_keys(queryset)
        self.message_user(
            request, ngettext("%d API key revoked.", "%d API keys revoked.", count) % count, messages.SUCCESS
        )

    def has_add_permission(self, request) -> bool:
        return False
