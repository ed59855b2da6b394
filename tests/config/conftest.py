"""Fixtures of the config tests."""

import io
import json
import logging

import pytest

from config.logging import JsonFormatter


@pytest.fixture
def log():
    """A logger writing through JsonFormatter; returns (logger, a function giving the lines as dicts)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.propagate = True
