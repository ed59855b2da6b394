"""accounts/admin.py: API keys listed and revoked in the admin, never their secret or its hash."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

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
