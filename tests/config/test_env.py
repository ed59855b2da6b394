from functools import partial

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_port,
    env_ports,
    env_rate,
    env_str,
    env_trace_exporters,
)


def test_unset_variables_give_the_defaults():
    assert env_str("X", environ={}) is None
    assert env_str("X", "fallback", environ={}) == "fallback"
    assert env_bool("X", True, environ={}) is True
    assert env_int("X", 7, environ={}) == 7
    assert env_float("X", 0.5, environ={}) == 0.5
    assert env_list("X", ["a"], environ={}) == ["a"]
    assert env_port("X", 8000, environ={}) == 8000
    assert env_ports("X", [80, 443], environ={}) == [80, 443]


def test_blank_numbers_and_ports_give_the_defaults():
    assert env_int("X", 7, environ={"X": "  "}) == 7
    assert env_float("X", 0.5, environ={"X": ""}) == 0.5
    assert env_port("X", 8000, environ={"X": " "}) == 8000


def test_good_values_are_parsed_and_stripped():
    assert env_str("X", "fallback", environ={"X": " value "}) == "value"
    assert env_int("X", 7, minimum=1, environ={"X": " 12 "}) == 12
    assert env_float("X", 0.5, minimum=0.1, environ={"X": "2.5"}) == 2.5
    assert env_list("X", [], environ={"X": " a, b ,, c "}) == ["a", "b", "c"]
    assert env_port("X", 8000, environ={"X": " 8100 "}) == 8100
    assert env_ports("X", [80], environ={"X": " 443, 8443 ,, "}) == [443, 8443]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("False", False), ("off", False)],
)
def test_booleans_accept_the_usual_spellings(value, expected):
    assert env_bool("X", not expected, environ={"X": value}) is expected


def test_an_empty_boolean_is_false_whatever_the_default():
    assert env_bool("X", True, environ={"X": ""}) is False


_BAD_RATE = (
    "RATE must be a rate such as 1200/minute (a whole number of requests, at least 1, "
    "per second, minute, hour or day), not '{}'."
)


@pytest.mark.parametrize(
    ("read", "value", "sentence"),
    [
        (partial(env_bool, "FLAG", False), "maybe", "FLAG must be true or false (1/0, yes/no, on/off), not 'maybe'."),
        (partial(env_int, "COUNT", 1), "many", "COUNT must be a whole number, not 'many'."),
        (partial(env_int, "COUNT", 1), "1.5", "COUNT must be a whole number, not '1.5'."),
        (partial(env_int, "COUNT", 1, minimum=1), "0", "COUNT must be at least 1, not 0."),
        (partial(env_float, "DELAY", 1.0), "soon", "DELAY must be a number, not 'soon'."),
        (partial(env_float, "DELAY", 1.0, minimum=0.1), "0.05", "DELAY must be at least 0.1, not 0.05."),
        (partial(env_port, "PORT", 80), "http", "PORT must be a port number between 1 and 65535, not 'http'."),
        (partial(env_port, "PORT", 80), "0", "PORT must be a port number between 1 and 65535, not '0'."),
        (partial(env_port, "PORT", 80), "65536", "PORT must be a port number between 1 and 65535, not '65536'."),
        (partial(env_port, "PORT", 80), "-1", "PORT must be a port number between 1 and 65535, not '-1'."),
        (
            partial(env_ports, "PORTS", [80]),
            "443,https",
            "PORTS must be comma-separated port numbers between 1 and 65535, not 'https'.",
        ),
        (
            partial(env_ports, "PORTS", [80]),
            "443, 70000",
            "PORTS must be comma-separated port numbers between 1 and 65535, not '70000'.",
        ),
        (partial(env_rate, "RATE", "1/day"), "lots/minute", _BAD_RATE.format("lots/minute")),
        (partial(env_rate, "RATE", "1/day"), "0/minute", _BAD_RATE.format("0/minute")),
        (partial(env_rate, "RATE", "1/day"), "10/month", _BAD_RATE.format("10/month")),
        (partial(env_rate, "RATE", "1/day"), "10 per minute", _BAD_RATE.format("10 per minute")),
        (partial(env_rate, "RATE", "1/day"), "-5/hour", _BAD_RATE.format("-5/hour")),
        # str.isdigit() accepts these; int() then refuses "²" and reads "٨٠" as 80.
        (partial(env_port, "PORT", 80), "\u00b2", "PORT must be a port number between 1 and 65535, not '\u00b2'."),
        (
            partial(env_port, "PORT", 80),
            "\u0668\u0660",
            "PORT must be a port number between 1 and 65535, not '\u0668\u0660'.",
        ),
    ],
)
def test_bad_values_raise_a_sentence_naming_the_variable(read, value, sentence):
    name = sentence.split()[0]

    with pytest.raises(ImproperlyConfigured) as raised:
        read(environ={name: value})

    assert str(raised.value) == sentence


def test_rates_take_drfs_period_spellings():
    spellings = ["5/s", "5/sec", "5/second", "5/m", "5/min", "5/minute", "5/h", "5/hour", "5/d", "5/day"]

    assert [env_rate("RATE", "1/day", environ={"RATE": f" {rate} "}) for rate in spellings] == spellings
    assert env_rate("RATE", "1/day", environ={"RATE": ""}) == "1/day"


def test_without_an_environ_argument_the_process_environment_is_read(monkeypatch):
    monkeypatch.setenv("CONFIG_ENV_TEST_COUNT", "42")
    monkeypatch.delenv("CONFIG_ENV_TEST_UNSET", raising=False)

    assert env_int("CONFIG_ENV_TEST_COUNT", 1) == 42
    assert env_str("CONFIG_ENV_TEST_UNSET", "fallback") == "fallback"


def test_an_environ_argument_is_read_instead_of_the_process_environment(monkeypatch):
    monkeypatch.setenv("CONFIG_ENV_TEST_COUNT", "42")

    assert env_int("CONFIG_ENV_TEST_COUNT", 1, environ={"CONFIG_ENV_TEST_COUNT": "3"}) == 3
    assert env_int("CONFIG_ENV_TEST_COUNT", 1, environ={}) == 1


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ([], None)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, (["otlp"], "http://collector:4318")),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces"}, (["otlp"], "http://t:4318/v1/traces")),
        ({"OTEL_TRACES_EXPORTER": "Console, otlp"}, (["console", "otlp"], None)),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ([], "http://c:4318")),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, ([], None)),
    ],
)
def test_trace_exporters_are_read_as_opentelemetry_defines_them(environ, expected):
    assert env_trace_exporters(environ=environ) == expected


def test_none_beside_another_trace_exporter_is_refused_with_a_sentence():
    with pytest.raises(ImproperlyConfigured, match="OTEL_TRACES_EXPORTER lists 'none' beside other exporters"):
        env_trace_exporters(environ={"OTEL_TRACES_EXPORTER": "none,console"})
