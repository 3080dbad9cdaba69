"""The OpenAPI schema of the REST API, published at /api/schema/ (drf-spectacular)."""

from __future__ import annotations

import json

import pytest
import yaml
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

EXPECTED_PATHS = {
    "/api/mirrors/{id}/excluded/": {"get"},
    "/api/mirrors/{id}/explain/": {"get"},
    "/api/mirrors/{id}/dependency-report/": {"get"},
    "/api/mirrors/{id}/policy-preview/": {"post"},
    "/api/mirrors/{id}/policy-apply/": {"post"},
    "/api/vulnerabilities/": {"get"},
    "/api/vulnerabilities/{id}/": {"get"},
    "/api/channels/": {"get", "post"},
    "/api/channels/{name}/": {"get", "put", "patch", "delete"},
    "/api/channels/{name}/freeze/": {"post"},
    "/api/channels/{name}/unfreeze/": {"post"},
    "/api/channels/{name}/grants/": {"get", "put"},
    "/api/channels/{name}/verification/": {"get"},
    "/api/channels/{parent_name}/subchannels/": {"get", "post"},
    "/api/channels/{parent_name}/subchannels/{name}/": {"get", "put", "patch", "delete"},
    "/api/channels/{parent_name}/subchannels/{name}/freeze/": {"post"},
    "/api/channels/{parent_name}/subchannels/{name}/unfreeze/": {"post"},
    "/api/channels/{parent_name}/subchannels/{name}/grants/": {"get", "put"},
    "/api/channels/{parent_name}/subchannels/{name}/verification/": {"get"},
    "/api/mirrors/": {"get", "post"},
    "/api/mirrors/{id}/": {"get", "put", "patch", "delete"},
    "/api/mirrors/{id}/run/": {"post"},
    "/api/mirrors/{id}/stop/": {"post"},
    "/api/mirrors/{id}/restart/": {"post"},
    "/api/mirrors/{id}/details/": {"get"},
    "/api/mirrors/{id}/files/": {"get"},
    "/api/mirrors/{id}/enforcements/": {"get"},
    "/api/mirrors/{id}/verification/": {"get"},
    "/api/runs/": {"get"},
    "/api/runs/{id}/": {"get"},
    "/api/policies/": {"get", "post"},
    "/api/policies/{id}/": {"get", "put", "patch", "delete"},
    "/api/waivers/": {"get", "post"},
    "/api/waivers/{id}/": {"get", "put", "patch", "delete"},
    "/api/name-mappings/": {"get"},
    "/api/name-mappings/{id}/": {"get"},
    "/api/channels/{path}/test-package/": {"get"},
    "/api/channels/{parent_name}/subchannels/{name}/test-package/": {"get"},
    "/api/tokens/": {"get", "post"},
    "/api/tokens/{id}/": {"get", "delete"},
    "/api/audit/": {"get"},
    "/api/audit/{id}/": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def _methods(path_item: dict) -> set[str]:
    return set(path_item) & HTTP_METHODS


def test_schema_is_served_as_yaml_by_default(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "PSM API"
    assert "/api/channels/" in document["paths"]


def test_schema_is_served_as_json_with_format_parameter(client):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    assert "/api/mirrors/{id}/run/" in json.loads(response.content)["paths"]


def test_schema_is_served_as_json_when_accept_asks_for_it(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert "/api/policies/" in json.loads(response.content)["paths"]


def test_schema_needs_no_login(api_client):
    assert api_client.get("/api/schema/").status_code == 200


def test_schema_lists_every_endpoint_with_its_methods(schema):
    paths = schema["paths"]

    for path, methods in EXPECTED_PATHS.items():
        assert path in paths, path
        assert _methods(paths[path]) == methods, path


def test_schema_lists_no_undocumented_endpoints(schema):
    assert set(schema["paths"]) == set(EXPECTED_PATHS)


def test_runs_are_read_only_in_the_schema(schema):
    assert _methods(schema["paths"]["/api/runs/"]) == {"get"}
    assert _methods(schema["paths"]["/api/runs/{id}/"]) == {"get"}


@pytest.mark.parametrize("command", ["run", "stop", "restart"])
def test_mirror_commands_answer_202_with_the_run_and_take_no_body(schema, command):
    operation = schema["paths"][f"/api/mirrors/{{id}}/{command}/"]["post"]

    assert "requestBody" not in operation
    assert operation["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SyncRun"
    }


@pytest.mark.parametrize(
    "path",
    [
        "/api/channels/{name}/freeze/",
        "/api/channels/{name}/unfreeze/",
        "/api/channels/{parent_name}/subchannels/{name}/freeze/",
    ],
)
def test_freeze_commands_take_no_body(schema, path):
    assert "requestBody" not in schema["paths"][path]["post"]


def test_mirror_list_documents_the_channel_filter(schema):
    parameters = schema["paths"]["/api/mirrors/"]["get"]["parameters"]

    assert "channel" in {p["name"] for p in parameters if p["in"] == "query"}


def test_mirror_details_are_described(schema):
    operation = schema["paths"]["/api/mirrors/{id}/details/"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    details = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]

    assert {
        "mirror",
        "effective_policy",
        "policy_source",
        "packages_active",
        "packages_passive",
        "latest_run",
        "dependency_report",
    } <= set(details)


def test_mirror_channel_is_a_path_string_and_run_now_is_write_only(schema):
    components = schema["components"]["schemas"]
    mirror = components["Mirror"]["properties"]

    assert mirror["channel"]["type"] == "string"
    assert "warnings" in mirror
    assert "active_run" in mirror
    assert mirror["run_now"]["writeOnly"] is True
    assert mirror["status"]["readOnly"] is True


def test_schema_declares_session_and_token_authentication(schema):
    schemes = schema["components"]["securitySchemes"]

    assert schemes["tokenAuth"] == {**schemes["tokenAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["keycloakAuth"]["bearerFormat"] == "JWT"
    assert "cookieAuth" in schemes


def test_schema_generates_without_warnings_and_is_valid_openapi():
    GENERATOR_STATS.reset()

    document = SchemaGenerator().get_schema(request=None, public=True)

    assert not GENERATOR_STATS, "drf-spectacular emitted warnings or errors (see stderr)"
    validate_schema(document)
