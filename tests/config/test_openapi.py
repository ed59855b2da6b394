"""The OpenAPI schema as CI sees it: valid without warnings, and describing the ingestion API."""

import pytest
import yaml
from django.core.management import call_command

INGESTION_OPERATIONS = [
    ("post", "/api/ingest"),
    ("get", "/api/ingest/runs"),
    ("get", "/api/ingest/runs/{id}"),
    ("get", "/api/ingest/runs/{id}/failures"),
    ("post", "/api/ingest/runs/{id}/resume"),
    ("post", "/api/ingest/runs/{id}/cancel"),
    ("post", "/api/ingest/runs/{id}/release-deletions"),
]
LIST_OPERATIONS = [
    ("/api/customers", "Customer"),
    ("/api/ingest/runs", "IngestRun"),
    ("/api/ingest/runs/{id}/failures", "IngestFailure"),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema written by `spectacular --validate --fail-on-warn`, the command CI runs."""
    path = tmp_path_factory.mktemp("openapi") / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def component(schema: dict, reference: dict) -> dict:
    return schema["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]


def json_schema(response: dict) -> dict:
    return response["content"]["application/json"]["schema"]


def test_spectacular_validates_with_fail_on_warn(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Customer data pipeline API"


@pytest.mark.parametrize(("method", "path"), INGESTION_OPERATIONS)
def test_every_ingestion_operation_is_documented(schema, method, path):
    responses = schema["paths"][path][method]["responses"]

    assert {"401", "403", "429"} <= set(responses)
    assert {"tokenAuth": []} in schema["paths"][path][method]["security"]


def test_starting_a_run_documents_accepted_and_conflict(schema):
    responses = schema["paths"]["/api/ingest"]["post"]["responses"]

    assert component(schema, json_schema(responses["202"]))["properties"]["status"]
    conflict = component(schema, json_schema(responses["409"]))
    assert set(conflict["required"]) == {"detail", "active_run"}
    assert {parameter["name"] for parameter in schema["paths"]["/api/ingest"]["post"]["parameters"]} == {
        "wait",
        "page_size",
        "dry_run",
        "mode",
    }


def test_resume_documents_both_conflict_bodies(schema):
    responses = schema["paths"]["/api/ingest/runs/{id}/resume"]["post"]["responses"]

    assert {"200", "202", "400", "404", "409"} <= set(responses)
    # A run that is not failed, abandoned or cancelled is refused with a `detail` alone.
    assert component(schema, json_schema(responses["409"]))["required"] == ["detail"]


def test_a_run_documents_its_attempt_as_read_only(schema):
    run = schema["components"]["schemas"]["IngestRun"]

    assert run["properties"]["attempt"]["type"] == "integer"
    assert run["properties"]["attempt"]["readOnly"] is True
    assert "attempt" in run["required"]


def test_cancel_documents_the_run_and_a_conflict_with_a_detail(schema):
    operation = schema["paths"]["/api/ingest/runs/{id}/cancel"]["post"]

    assert {"200", "401", "403", "404", "409", "429"} <= set(operation["responses"])
    assert "400" not in operation["responses"]  # it takes no parameters
    assert json_schema(operation["responses"]["200"]) == {"$ref": "#/components/schemas/IngestRun"}
    assert component(schema, json_schema(operation["responses"]["409"]))["required"] == ["detail"]
    assert "cancelled" in schema["components"]["schemas"]["StatusEnum"]["enum"]


@pytest.mark.parametrize(("path", "item"), LIST_OPERATIONS)
def test_list_operations_answer_the_page_envelope(schema, path, item):
    envelope = component(schema, json_schema(schema["paths"][path]["get"]["responses"]["200"]))

    assert envelope["required"] == ["data", "total", "page", "limit"]
    assert envelope["properties"]["data"] == {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}}
    parameters = {parameter["name"] for parameter in schema["paths"][path]["get"]["parameters"]}
    assert {"page", "limit"} <= parameters


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (method, path)
        for method, path in INGESTION_OPERATIONS
        # Operations without query parameters have no 400.
        if path
        not in ("/api/ingest/runs/{id}", "/api/ingest/runs/{id}/cancel", "/api/ingest/runs/{id}/release-deletions")
    ],
)
def test_bad_parameters_answer_the_validation_error_shape(schema, method, path):
    error = component(schema, json_schema(schema["paths"][path][method]["responses"]["400"]))

    assert error["required"] == ["detail", "errors"]
    assert set(error["properties"]) == {"detail", "errors"}


@pytest.mark.parametrize("path", ["/api/ingest/runs/{id}", "/api/ingest/runs/{id}/failures"])
def test_unknown_run_answers_the_error_shape(schema, path):
    error = component(schema, json_schema(schema["paths"][path]["get"]["responses"]["404"]))

    assert error["required"] == ["detail"]
