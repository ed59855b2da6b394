"""The schema and the docs page need a signed-in caller unless API_PUBLIC_DOCS opens them."""

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def private(settings):
    settings.API_PUBLIC_DOCS = False


def test_the_schema_needs_authentication_when_private(private):
    response = APIClient().get("/api/schema")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_the_docs_page_sends_an_anonymous_browser_to_the_admin_login_when_private(private):
    response = Client().get("/api/docs")

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next=/api/docs"


def test_a_token_reads_the_schema_and_a_session_the_docs_when_private(private):
    user = User.objects.create_user("reader")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    browser = Client()
    browser.force_login(user)

    assert api.get("/api/schema").status_code == 200
    assert browser.get("/api/schema").status_code == 200
    assert browser.get("/api/docs").status_code == 200


def test_both_are_open_to_anyone_when_public(settings):
    settings.API_PUBLIC_DOCS = True

    assert APIClient().get("/api/schema").status_code == 200
    assert Client().get("/api/docs").status_code == 200
