"""accounts/admin.py: API keys listed, rotated and revoked in the admin, never their secret or its
hash; DRF's legacy tokens listed by owner, never shown."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils.timezone import now
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import api_keys
from accounts.models import ApiKey, Scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("root"))
    return client


@pytest.fixture
def issued(db):
    return api_keys.create_key(user=User.objects.create_user("bob"), name="dashboards", scopes=[Scope.CUSTOMERS_READ])


def test_the_key_list_shows_keys_but_neither_secret_nor_hash(admin_client, issued):
    response = admin_client.get(reverse("admin:accounts_apikey_changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    assert issued.key.key_id in page and "dashboards" in page
    assert issued.secret.split("_", 2)[2] not in page
    assert issued.key.secret_hash not in page


def test_the_key_page_shows_neither_secret_nor_hash_and_keys_are_not_added_here(admin_client, issued):
    page = admin_client.get(reverse("admin:accounts_apikey_change", args=[issued.key.pk])).content.decode()

    assert issued.key.key_id in page
    assert issued.key.secret_hash not in page
    assert admin_client.get(reverse("admin:accounts_apikey_add")).status_code == 403


def test_the_revoke_action_revokes_the_selected_keys(admin_client, issued):
    response = admin_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke", "_selected_action": [issued.key.pk]},
        follow=True,
    )

    assert "1 API key revoked." in response.content.decode()
    assert ApiKey.objects.get().revoked_at is not None


def _status(key: str) -> int:
    return APIClient().get("/api/customers", HTTP_AUTHORIZATION=f"Bearer {key}").status_code


def test_rotating_in_the_admin_shows_each_new_key_once_and_keeps_the_old_one_for_the_overlap(admin_client, issued):
    User.objects.filter(username="bob").update(is_superuser=True)
    before = now()

    response = admin_client.post(
        reverse("admin:accounts_apikey_changelist"), {"action": "rotate", "_selected_action": [issued.key.pk]}
    )

    page = response.content.decode()
    successor = ApiKey.objects.get(rotated_from=issued.key)
    [shown] = re.findall(r'<code class="new-key">([^<]*)</code>', page)
    assert response.status_code == 200
    assert "1 API key rotated" in page
    assert shown.startswith(f"cdp_{successor.key_id}_")
    assert "no-store" in response["Cache-Control"]
    assert (successor.name, successor.scopes, successor.user.username) == ("dashboards", ["customers:read"], "bob")
    old = ApiKey.objects.get(pk=issued.key.pk)
    assert before + timedelta(hours=23) < old.expires_at <= now() + timedelta(hours=24)
    assert _status(shown) == 200
    assert _status(issued.secret) == 200  # still, for the overlap
    # Shown once: the new key's page in the admin has its id, not its secret.
    again = admin_client.get(reverse("admin:accounts_apikey_change", args=[successor.pk])).content.decode()
    assert shown not in again and successor.key_id in again


def test_rotating_a_revoked_key_in_the_admin_says_why_and_makes_none(admin_client, issued):
    api_keys.revoke_keys(ApiKey.objects.all())

    response = admin_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "rotate", "_selected_action": [issued.key.pk]},
        follow=True,
    )

    assert f"Key {issued.key.key_id} is revoked or expired: create a new key instead." in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_the_legacy_token_list_never_shows_a_token(admin_client, issued):
    token = Token.objects.create(user=User.objects.get(username="bob"))

    listing = admin_client.get(reverse("admin:accounts_legacytoken_changelist"))
    detail = admin_client.get(reverse("admin:accounts_legacytoken_change", args=[token.user_id]))

    assert listing.status_code == detail.status_code == 200
    assert "bob" in listing.content.decode()
    for page in (listing, detail):
        assert token.key not in page.content.decode()
    assert "legacy token of bob" in detail.content.decode()
    assert admin_client.get(reverse("admin:accounts_legacytoken_add")).status_code == 403
