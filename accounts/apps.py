from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"


class AdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the lockout on its login (Django's way to replace the default site)."""

    default = False  # named in INSTALLED_APPS in place of django.contrib.admin; "accounts" is the app
    default_site = "accounts.admin_login.AdminSite"
