"""Django's four password validators, with the minimum length from ACCOUNTS_PASSWORD_MIN_LENGTH."""

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def refusals(password: str, user=None) -> list[str]:
    try:
        validate_password(password, user)
    except ValidationError as error:
        return error.messages
    return []


def test_a_password_shorter_than_twelve_characters_is_refused():
    assert refusals("kq7#vze2lwp") == ["This password is too short. It must contain at least 12 characters."]
    assert refusals("kq7#vze2lwpx") == []


def test_common_numeric_and_username_like_passwords_are_refused():
    assert "This password is too common." in refusals("qwerty123456")
    assert "This password is entirely numeric." in refusals("804711236659021")
    assert "The password is too similar to the username." in refusals("operator-alice", User(username="operator-alice"))


def test_the_admin_refuses_to_set_a_short_password():
    admin = User.objects.create_superuser("root", password="unused for the test")
    target = User.objects.create_user("bob")
    client = Client()
    client.force_login(admin)

    response = client.post(
        reverse("admin:auth_user_password_change", args=[target.pk]),
        {"password1": "short1", "password2": "short1", "usable_password": "true"},
    )

    assert response.status_code == 200
    assert "This password is too short. It must contain at least 12 characters." in response.content.decode()
    target.refresh_from_db()
    assert not target.has_usable_password()
