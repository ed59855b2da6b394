"""The admin login refuses a username or an address after too many failures, for a window."""

import logging

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

pytestmark = pytest.mark.django_db

LOGIN = reverse("admin:login")
PASSWORD = "correct horse battery staple"
LOCKED = "Too many failed login attempts for this username or from this address."
INVALID = "Please enter the correct username and password for a staff account."


def attempt(client, username: str, password: str, address: str = "203.0.113.5"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/"}, REMOTE_ADDR=address)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_after_five_failures_even_the_right_password_is_refused_with_a_message_and_429(client, clock, staff):
    for _ in range(5):
        response = attempt(client, "alice", "wrong")
        assert response.status_code == 200
        assert INVALID in response.content.decode()

    response = attempt(client, "alice", PASSWORD)

    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    assert LOCKED in response.content.decode()
    assert "Try again in 15 minutes." in response.content.decode()
    assert not logged_in(client)


def test_a_locked_username_is_refused_from_every_address(client, clock, staff):
    for number in range(5):
        attempt(client, "alice", "wrong", address=f"198.51.100.{number}")

    response = attempt(client, "alice", PASSWORD, address="192.0.2.77")

    assert response.status_code == 429
    assert not logged_in(client)


def test_a_locked_address_is_refused_for_every_username_and_other_addresses_are_not(client, clock, staff):
    for name in ["bob", "carol", "dave", "erin", "frank"]:
        attempt(client, name, "wrong", address="203.0.113.5")

    assert attempt(client, "alice", PASSWORD, address="203.0.113.5").status_code == 429
    assert attempt(client, "alice", PASSWORD, address="192.0.2.77").status_code == 302
    assert logged_in(client)


def test_the_lockout_lasts_one_window_after_the_last_counted_failure(client, clock, staff):
    for _ in range(5):
        attempt(client, "alice", "wrong")

    clock.advance(minutes=14, seconds=59)
    assert attempt(client, "alice", PASSWORD).status_code == 429
    clock.advance(seconds=1)
    assert attempt(client, "alice", PASSWORD).status_code == 302


def test_refused_attempts_are_not_counted_and_do_not_extend_the_lockout(client, clock, staff):
    for _ in range(5):
        attempt(client, "alice", "wrong")
    for _ in range(3):
        clock.advance(minutes=4)
        assert attempt(client, "alice", "wrong").status_code == 429

    clock.advance(minutes=3)

    assert attempt(client, "alice", PASSWORD).status_code == 302


def test_a_success_does_not_reset_another_users_counter(client, clock, staff):
    User.objects.create_user("bob", password="bob's own good password", is_staff=True)
    for _ in range(4):
        attempt(client, "alice", "wrong", address="203.0.113.5")

    assert attempt(client, "bob", "bob's own good password", address="203.0.113.5").status_code == 302
    client.logout()
    attempt(client, "alice", "wrong", address="192.0.2.1")

    assert attempt(client, "alice", PASSWORD, address="192.0.2.2").status_code == 429  # alice: 5 failures
    assert attempt(client, "bob", "bob's own good password", address="203.0.113.5").status_code == 302


def test_a_right_password_refused_to_a_non_staff_user_counts_as_a_failure(client, clock):
    # Otherwise the lockout would tell a right password (never locks) from a wrong one.
    User.objects.create_user("mallory", password=PASSWORD)
    for _ in range(5):
        assert attempt(client, "mallory", PASSWORD).status_code == 200

    assert attempt(client, "mallory", PASSWORD).status_code == 429


def test_each_failure_and_the_lockout_are_logged_without_the_password(client, clock, staff, caplog):
    caplog.set_level(logging.INFO, logger="accounts")
    for _ in range(5):
        attempt(client, "alice", "s3cret-guess")
    attempt(client, "alice", "s3cret-guess")

    messages = [record.getMessage() for record in caplog.records if record.name == "accounts.lockout"]
    failures = [message for message in messages if message.startswith("authentication failed")]
    lockouts = [message for message in messages if message.startswith("locked out")]
    assert failures == [
        f'authentication failed: door=admin username="alice" address=203.0.113.5 failures={n}' for n in range(1, 6)
    ]
    assert lockouts == [
        "locked out: address=203.0.113.5 for 900 s after 5 failures",
        'locked out: username="alice" for 900 s after 5 failures',
    ]
    assert "s3cret-guess" not in caplog.text


def test_an_untrusted_username_is_logged_escaped(client, clock, caplog):
    caplog.set_level(logging.INFO, logger="accounts")
    attempt(client, "x\nlocked out: username='admin'\x1b[2J", "wrong")

    [message] = [record.getMessage() for record in caplog.records if record.name == "accounts.lockout"]
    # One line, quoted and escaped: no forged second line, no terminal control sequence.
    assert message == (
        "authentication failed: door=admin username=\"x\\nlocked out: username='admin'\\u001b[2J\" "
        "address=203.0.113.5 failures=1"
    )
