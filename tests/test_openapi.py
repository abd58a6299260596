"""openapi.yaml is what the app serves, and documents every route's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.cli import render_openapi

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "openapi.yaml"


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(render_openapi())
    return spec


def test_openapi_yaml_is_in_step_with_the_app() -> None:
    committed = OPENAPI_FILE.read_text()

    assert committed == render_openapi(), (
        "openapi.yaml drifted from the app: run `make openapi` and commit the result"
    )


def test_every_api_route_documents_its_problem_responses() -> None:
    spec = _spec()
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/api/")
        for method, operation in item.items()
    ]
    assert len(operations) >= 15

    for path, method, operation in operations:
        responses = operation["responses"]
        # Twilio's requests carry a signature, not a bearer token: a bad one is a 403.
        signed_by_twilio = "twilio" in operation["tags"]
        for status in ("403",) if signed_by_twilio else ("401", "422"):
            assert status in responses, f"{method.upper()} {path} does not document {status}"
            content = responses[status]["content"]
            assert list(content) == ["application/problem+json"], f"{method} {path} {status}"
            assert content["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }


def test_the_problem_schema_is_published() -> None:
    problem = _spec()["components"]["schemas"]["Problem"]

    assert set(problem["required"]) == {"type", "title", "status", "code"}
    assert {"detail", "errors"} <= set(problem["properties"])


def test_routes_are_authenticated_with_bearer_tokens() -> None:
    spec = _spec()

    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/api/user/profile"]["get"]["security"] == [{"HTTPBearer": []}]


def test_operation_ids_are_unique_handler_names() -> None:
    ids = [
        operation["operationId"]
        for item in _spec()["paths"].values()
        for operation in item.values()
    ]

    assert len(ids) == len(set(ids))
    assert "get_own_profile" in ids
