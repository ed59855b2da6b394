import pytest
from rest_framework.test import APIClient


@pytest.fixture
def api_client():
    return APIClient()


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """The monotonic clock of the in-process caches (config/cached.py), moved by hand; the caches start empty."""
    from config import cached

    fake = _Clock()
    monkeypatch.setattr("config.cached.monotonic", fake)
    cached.clear_all()
    yield fake
    cached.clear_all()
