from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db

User = get_user_model()


def _run(*args: str) -> dict[str, str]:
    """Run the command and parse its `key: value` lines."""
    out = StringIO()
    call_command("create_api_token", *args, stdout=out)
    return dict(line.split(": ", 1) for line in out.getvalue().splitlines())


def _status(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/customers").status_code


def test_new_user_gets_a_working_password_and_an_api_key_and_no_token():
    output = _run("alice", "--superuser")

    user = User.objects.get(username="alice")
    assert output["username"] == "alice"
    assert output["key"].startswith("cdp_")
    assert _status(output["key"]) == 200
    assert ApiKey.objects.get(user=user).name == "create_api_token"
    assert not Token.objects.exists()
    assert authenticate(username="alice", password=output["password"]) == user
    assert "token" not in output


def test_a_plain_user_is_neither_staff_nor_superuser_and_its_key_reads_nothing():
    output = _run("alice")

    user = User.objects.get(username="alice")
    assert not user.is_staff
    assert not user.is_superuser
    assert _status(output["key"]) == 403


def test_running_it_again_keeps_the_password_prints_a_new_key_and_revokes_the_one_before():
    first = _run("alice", "--superuser")
    second = _run("alice")

    assert "password" not in second
    assert second["key"] != first["key"]
    assert _status(second["key"]) == 200
    assert _status(first["key"]) == 401
    assert User.objects.filter(username="alice").count() == 1
    assert authenticate(username="alice", password=first["password"]) is not None


def test_a_key_of_another_name_is_kept():
    ci = _run("alice", "--superuser", "--name", "ci")
    second = _run("alice")

    assert _status(ci["key"]) == 200
    assert _status(second["key"]) == 200


def test_superuser_flag_makes_a_staff_superuser():
    _run("root-like", "--superuser")

    user = User.objects.get(username="root-like")
    assert user.is_superuser
    assert user.is_staff


def test_staff_flag_grants_exactly_the_pipeline_permissions():
    _run("operator", "--staff")

    user = User.objects.get(username="operator")
    assert user.is_staff
    assert not user.is_superuser
    assert set(user.get_all_permissions()) == {
        "customers.view_customer",
        "ingestion.view_ingestrun",
        "ingestion.view_ingestfailure",
        "ingestion.start_ingestion",
    }


def test_staff_flag_on_an_existing_user_grants_without_a_new_password():
    _run("bob")
    output = _run("bob", "--staff")

    assert "password" not in output
    assert User.objects.get(username="bob").has_perm("ingestion.start_ingestion")


def test_superuser_and_staff_together_are_refused():
    with pytest.raises(CommandError):
        call_command("create_api_token", "carol", "--superuser", "--staff", stdout=StringIO())


@pytest.mark.parametrize("username", ["", "has space", "semi;colon", "x" * 151])
def test_invalid_username_is_refused_with_a_sentence_and_creates_nothing(username):
    with pytest.raises(CommandError, match="is not a valid username"):
        call_command("create_api_token", username, stdout=StringIO())
    assert not User.objects.exists()


def test_the_generated_password_passes_the_password_validators():
    output = _run("operator-with-a-long-username")

    user = User.objects.get(username="operator-with-a-long-username")
    validate_password(output["password"], user)


def test_the_generated_password_is_as_long_as_the_configured_minimum(settings):
    settings.ACCOUNTS_PASSWORD_MIN_LENGTH = 64
    settings.AUTH_PASSWORD_VALIDATORS = [
        {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 64}}
    ]

    output = _run("dave")

    validate_password(output["password"], User.objects.get(username="dave"))
    assert authenticate(username="dave", password=output["password"]) is not None
