from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User


class Clock:
    """The lockout's clock, moved by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    # Two minutes into a 15-minute window, so a test's failures share one window.
    clock = Clock(datetime(2026, 3, 2, 9, 2, tzinfo=UTC))
    monkeypatch.setattr("accounts.lockout.now", clock)
    monkeypatch.setattr("accounts.windows.now", clock)  # how long a lockout has to go
    return clock


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("alice", password="correct horse battery staple", is_staff=True)


@pytest.fixture
def reader(db) -> User:
    """A user holding customers.view_customer and nothing else."""
    user = User.objects.create_user("reader", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_customer", content_type__app_label="customers"))
    return user
