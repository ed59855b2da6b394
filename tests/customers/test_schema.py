import re

import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def test_project_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert "/api/customers/{customer_id}" in (tmp_path / "schema.yaml").read_text()


def test_list_documents_the_envelope(schema):
    ok = schema["paths"]["/api/customers"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    envelope = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[1]]

    assert envelope["required"] == ["data", "total", "page", "limit"]
    assert envelope["properties"]["data"] == {"type": "array", "items": {"$ref": "#/components/schemas/Customer"}}
    assert envelope["properties"]["limit"]["maximum"] == 100


def test_list_documents_pagination_and_filters(schema):
    parameters = {p["name"]: p for p in schema["paths"]["/api/customers"]["get"]["parameters"]}

    assert set(parameters) == {
        "page",
        "limit",
        "email",
        "search",
        "created_after",
        "created_before",
        "updated_since",
        "ordering",
        "include_deleted",
    }
    assert parameters["include_deleted"]["schema"] == {"type": "boolean", "default": False}
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}
    assert parameters["created_after"]["schema"]["format"] == "date-time"
    assert "-updated_at" in parameters["ordering"]["schema"]["enum"]


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("/api/customers", {"200", "400", "401", "403", "429"}),
        # 400: a bad include_deleted.
        ("/api/customers/{customer_id}", {"200", "400", "401", "403", "404", "410", "429"}),
    ],
)
def test_error_responses_are_documented(schema, path, codes):
    responses = schema["paths"][path]["get"]["responses"]

    assert set(responses) == codes
    for code in codes - {"200"}:
        ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ValidationError" if code == "400" else "/Error")
    assert schema["components"]["schemas"]["ValidationError"]["required"] == ["detail", "errors"]


def test_customer_record_schema(schema):
    customer = schema["components"]["schemas"]["Customer"]

    assert list(customer["properties"]) == [
        "customer_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "address",
        "date_of_birth",
        "account_balance",
        "created_at",
        "updated_at",
    ]
    assert customer["properties"]["account_balance"]["type"] == "number"
    assert customer["properties"]["created_at"]["format"] == "date-time"


@pytest.mark.django_db
def test_docs_page_loads_only_local_assets(client):
    response = client.get("/api/docs")

    html = response.content.decode()
    assert response.status_code == 200
    assert "swagger-ui" in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
    assert assets
    assert all(asset.startswith(("/static/", "/api/")) for asset in assets), assets
    assert not re.search(r"https?://", html)
    # Same-origin scripts (the page's own initialiser included) load nothing from elsewhere either.
    for script in [asset for asset in assets if asset.startswith("/api/")]:
        response = client.get(script)
        assert response.status_code == 200
        assert not re.search(r"https?://", response.content.decode())
