import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture
def reader(db) -> User:
    """A user holding customers.view_customer and nothing else."""
    user = User.objects.create_user("reader", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_customer", content_type__app_label="customers"))
    return user


@pytest.fixture
def reader_client(reader) -> APIClient:
    """An API client authenticated as `reader` with a real token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=reader).key}")
    return client
