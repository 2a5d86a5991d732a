"""Property-based run of the API against its own OpenAPI schema (schemathesis + hypothesis): for every
operation, generated schema-valid and schema-invalid requests; every answer must use a documented status
code, media type and response schema, valid requests must be accepted, invalid ones rejected with a 4xx,
and no request may cause a server error."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from recops.serving.app import create_app
from recops.serving.holder import ModelHolder
from recops.serving.params import ServingParams
from tests.unit.serving.conftest import loaded

WITH_INPUT = [
    ("GET", "/v1/users/{user_id}/recommendations"),
    ("POST", "/v1/recommendations"),
    ("GET", "/v1/items/{item_id}/similar"),
]
OPERATIONS = [*WITH_INPUT, ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")]
# invalid requests only exist for operations that take input; random ids are unknown to the model, so the
# known-id paths (personal lists, similar items) get their own runs with the id fixed and the rest fuzzed
CASES = [(m, p, GenerationMode.POSITIVE, None) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE, None) for m, p in WITH_INPUT] + [
    ("GET", "/v1/users/{user_id}/recommendations", GenerationMode.POSITIVE, {"user_id": "101"}),
    ("GET", "/v1/items/{item_id}/similar", GenerationMode.POSITIVE, {"item_id": "m4"}),
]


@pytest.fixture(scope="module")
def api_schema(payloads):
    holder = ModelHolder(loaded(payloads["two_tower"], "3"))
    app = create_app(holder, ServingParams(default_k=5, max_k=20, max_session_items=8, max_id_length=24))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema) -> None:
    assert sorted(result.ok().label for result in api_schema.get_all_operations()) == sorted(
        f"{m} {p}" for m, p in OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode", "fixed"), CASES,
                         ids=[f"{m} {p} {g.value}{' ' + str(f) if f else ''}" for m, p, g, f in CASES])
def test_api_conforms_to_its_schema(api_schema, method: str, path: str, mode: GenerationMode,
                                    fixed: dict[str, str] | None) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call_and_validate()
        assert response.status_code < 500, response.text
        statuses.append(response.status_code)

    run()
    assert statuses, "no request was generated"
    if fixed:
        assert 200 in statuses, f"no request for a known id was answered: {sorted(set(statuses))}"
