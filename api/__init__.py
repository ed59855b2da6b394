"""API plumbing every app shares: the page/limit paginators, permissions, the error body
and its OpenAPI schema, who may read the schema and docs, renderers, the exception handler and
the read-only admin base.

It holds no models and knows no app; apps import from it, never the other way round.
"""
