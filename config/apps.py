from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """What every process of the project does at start-up, whichever door it came in by."""

    name = "config"
    label = "project"

    def ready(self):
        from config import tracing

        # Before the first request handler loads the middleware: Django's instrumentation adds one.
        tracing.configure()
