from django.apps import AppConfig


class MocksourceConfig(AppConfig):
    """Registered only so Django finds the `generate_customers` command."""

    name = "mocksource"
