"""HTTP contract of the serving API: answers match the model, fallbacks are flagged, bounds and malformed
requests get a 4xx naming the problem, metrics and the OpenAPI schema describe everything."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recops.serving.app import MODEL_VERSION_HEADER, create_app
from recops.serving.holder import ModelHolder
from recops.serving.params import ServingParams
from tests.unit.serving.conftest import api, loaded
from tests.unit.test_recommender import N_ITEMS, N_USERS

PARAMS = ServingParams(default_k=5, max_k=20, max_session_items=6, max_id_length=16)
VERSION = "7"
USERS = [str(100 + u) for u in range(N_USERS)]


@pytest.fixture(scope="module")
def model(payloads):
    return loaded(payloads["two_tower"], VERSION)


@pytest.fixture(scope="module")
def client(model):
    with api(ModelHolder(model), PARAMS) as c:
        yield c


def items_of(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def test_user_recommendations_match_the_model(client, model) -> None:
    rec = model.recommender
    for user in USERS:
        resp = client.get(f"/v1/users/{user}/recommendations", params={"k": 4})
        assert resp.status_code == 200, resp.text
        assert resp.headers[MODEL_VERSION_HEADER] == VERSION
        body = resp.json()
        want = rec.recommend_user(user, 4)
        assert body["model_version"] == VERSION and body["user_id"] == user and body["k"] == 4
        assert body["fallback"] is False and body["fallback_reason"] is None
        assert items_of(body) == want.item_ids
        assert [it["score"] for it in body["items"]] == pytest.approx(want.scores)
        assert not set(items_of(body)) & set(rec.history(user))  # already-seen items are excluded


def test_default_k_and_k_beyond_the_catalog(client, model) -> None:
    assert len(client.get("/v1/users/100/recommendations").json()["items"]) == PARAMS.default_k
    # user 107 has seen all items but one: a list is short only when exclusions leave fewer items
    body = client.get("/v1/users/107/recommendations", params={"k": 20}).json()
    assert items_of(body) == [f"m{N_ITEMS - 1}"] and body["k"] == 20
    assert len(client.get("/v1/users/nobody/recommendations", params={"k": 20}).json()["items"]) == N_ITEMS


def test_unknown_user_gets_the_popularity_fallback(client, model) -> None:
    body = client.get("/v1/users/nobody/recommendations", params={"k": 6}).json()
    assert body["fallback"] is True and body["fallback_reason"] == "unknown_user"
    popular = model.recommender.recommend_user("nobody", 6)
    assert popular.fallback is True
    assert items_of(body) == popular.item_ids
    assert [it["score"] for it in body["items"]] == popular.scores


def test_session_recommendations(client, model) -> None:
    rec = model.recommender
    resp = client.post("/v1/recommendations", json={"item_ids": ["m3", "m1", "not-an-item"], "k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["fallback"] is False and body["ignored_item_ids"] == ["not-an-item"]
    assert items_of(body) == rec.recommend_history(["m3", "m1"], 5).item_ids
    assert not {"m3", "m1"} & set(items_of(body))
    assert resp.headers[MODEL_VERSION_HEADER] == VERSION

    default_k = client.post("/v1/recommendations", json={"item_ids": ["m2"]}).json()
    assert len(default_k["items"]) == PARAMS.default_k and default_k["k"] == PARAMS.default_k
    for session in (["nope", "neither"], []):
        fb = client.post("/v1/recommendations", json={"item_ids": session, "k": 3}).json()
        assert fb["fallback"] is True and fb["fallback_reason"] == "no_known_items"
        assert items_of(fb) == rec.recommend_user("nobody", 3).item_ids
        assert fb["ignored_item_ids"] == session


def test_similar_items(client, model) -> None:
    body = client.get("/v1/items/m4/similar", params={"k": 3}).json()
    assert body["item_id"] == "m4" and body["model_version"] == VERSION and body["fallback"] is False
    assert items_of(body) == model.recommender.similar_items("m4", 3).item_ids
    assert "m4" not in items_of(body)
    assert len(client.get("/v1/items/m4/similar", params={"k": 20}).json()["items"]) == N_ITEMS - 1

    resp = client.get("/v1/items/no-such-item/similar")
    assert resp.status_code == 404
    assert resp.json()["error"] == "unknown_item"
    assert "'no-such-item' is not in the catalog of model version 7" in resp.json()["detail"]


def test_popularity_model_similar_items_are_flagged(payloads) -> None:
    with api(ModelHolder(loaded(payloads["popularity"], "2")), PARAMS) as c:
        body = c.get("/v1/items/m0/similar", params={"k": 4}).json()
    assert body["fallback"] is True and body["fallback_reason"] == "popularity_model"
    assert len(body["items"]) == 4 and "m0" not in items_of(body)


BAD_QUERIES = [
    ("/v1/users/100/recommendations?k=0", "query.k", "greater than or equal to 1"),
    ("/v1/users/100/recommendations?k=21", "query.k", "less than or equal to 20"),
    ("/v1/users/100/recommendations?k=ten", "query.k", "valid integer"),
    ("/v1/users/100/recommendations?k=1.5", "query.k", "valid integer"),
    ("/v1/users/" + "u" * 17 + "/recommendations", "path.user_id", "at most 16 characters"),
    ("/v1/items/m1/similar?k=-3", "query.k", "greater than or equal to 1"),
    ("/v1/items/m1/similar?k=1000", "query.k", "less than or equal to 20"),
]


@pytest.mark.parametrize(("url", "location", "message"), BAD_QUERIES)
def test_invalid_query_is_a_clear_422(client, url: str, location: str, message: str) -> None:
    resp = client.get(url)
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert [e["location"] for e in body["errors"]] == [location]
    assert message in body["errors"][0]["message"]
    assert body["detail"].startswith(f"{location}: ")


BAD_BODIES = [
    ({"k": 3}, "body.item_ids", "Field required"),
    ({"item_ids": "m1"}, "body.item_ids", "valid list"),
    ({"item_ids": ["m1"] * 7}, "body.item_ids", "at most 6 items"),
    ({"item_ids": ["m1"], "k": 0}, "body.k", "greater than or equal to 1"),
    ({"item_ids": ["m1"], "k": 21}, "body.k", "less than or equal to 20"),
    ({"item_ids": ["m1", ""]}, "body.item_ids.1", "at least 1 character"),
    ({"item_ids": ["m1", 5]}, "body.item_ids.1", "valid string"),
    ({"item_ids": ["m1"], "user": "x"}, "body.user", "Extra inputs are not permitted"),
    ([], "body", "valid dictionary"),
]


@pytest.mark.parametrize(("payload", "location", "message"), BAD_BODIES)
def test_invalid_session_is_a_clear_422(client, payload, location: str, message: str) -> None:
    resp = client.post("/v1/recommendations", json=payload)
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert location in [e["location"] for e in body["errors"]]
    assert any(message in e["message"] for e in body["errors"])
    assert location in body["detail"]


def test_undecodable_body_unknown_route_and_method(client) -> None:
    resp = client.post("/v1/recommendations", content=b'{"item_ids": [', headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"] == "invalid_request"
    assert "JSON decode error" in resp.json()["detail"]

    missing = client.get("/v1/nothing/here")
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "detail": "Not Found", "errors": []}
    wrong = client.delete("/v1/users/100/recommendations")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert wrong.headers["allow"] == "GET"


def test_not_ready_until_a_model_is_swapped_in(payloads) -> None:
    holder = ModelHolder()
    with api(holder, PARAMS) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert "no model loaded yet" in ready.json()["detail"]
        for resp in (c.get("/v1/users/100/recommendations"), c.post("/v1/recommendations", json={"item_ids": []}),
                     c.get("/v1/items/m1/similar")):
            assert resp.status_code == 503
            assert resp.json()["error"] == "not_ready"

        holder.swap(loaded(payloads["sasrec"], "12"))
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready" and ready.json()["model_version"] == "12"
        assert ready.json()["model_kind"] == "sasrec"
        assert c.get("/v1/users/100/recommendations").json()["model_version"] == "12"


def scrape(client) -> dict[str, list]:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}


def sample(families: dict[str, list], name: str, **labels: str) -> float:
    values = [s.value for samples in families.values() for s in samples
              if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert values, f"no sample {name}{labels}"
    return sum(values)


def test_metrics(payloads) -> None:
    route = "/v1/users/{user_id}/recommendations"
    with api(ModelHolder(loaded(payloads["two_tower"], "5")), PARAMS) as c, \
            api(ModelHolder(loaded(payloads["sasrec"], "6")), PARAMS) as other:
        for user in ("100", "101", "nobody"):
            assert c.get(f"/v1/users/{user}/recommendations").status_code == 200
        assert c.get("/v1/users/100/recommendations?k=0").status_code == 422
        assert c.get("/v1/items/nope/similar").status_code == 404
        m = scrape(c)
        assert sample(m, "recops_http_requests_total", route=route, method="GET", status="200") == 3
        assert sample(m, "recops_http_requests_total", route=route, method="GET", status="422") == 1
        assert sample(m, "recops_http_requests_total", route="/v1/items/{item_id}/similar", status="404") == 1
        assert sample(m, "recops_http_request_duration_seconds_count", route=route, method="GET") == 4
        assert sample(m, "recops_http_request_duration_seconds_bucket", route=route, method="GET", le="+Inf") == 4
        assert sample(m, "recops_fallback_responses_total", route=route, reason="unknown_user") == 1
        assert sample(m, "recops_model_version") == 5
        assert sample(m, "recops_model_info", version="5", kind="two_tower") == 1
        assert sample(m, "recops_model_swaps_total") == 0
        # every application has its own registry: nothing leaks between them
        o = scrape(other)
        assert sample(o, "recops_model_version") == 6
        assert [s for samples in o.values() for s in samples
                if s.name == "recops_http_requests_total" and s.labels.get("route") == route] == []


def test_openapi_schema_is_complete() -> None:
    schema = create_app(ModelHolder(), PARAMS).openapi()
    paths = schema["paths"]
    assert set(paths) == {"/v1/users/{user_id}/recommendations", "/v1/recommendations",
                          "/v1/items/{item_id}/similar", "/healthz", "/readyz", "/metrics"}
    components = schema["components"]["schemas"]
    for path, ops in paths.items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method} {path} has no summary"
            assert "200" in op["responses"], f"{method} {path} documents no 200"
    for path, method, model in [("/v1/users/{user_id}/recommendations", "get", "UserRecommendations"),
                                ("/v1/recommendations", "post", "SessionRecommendations"),
                                ("/v1/items/{item_id}/similar", "get", "SimilarItems")]:
        responses = paths[path][method]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        for status in ("422", "503"):
            assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
        required = set(components[model]["required"])
        assert {"model_version", "k", "fallback", "fallback_reason", "items"} <= required
    assert paths["/v1/items/{item_id}/similar"]["get"]["responses"]["404"]["content"]["application/json"]
    assert paths["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith("Readiness")
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]

    k = {p["name"]: p for p in paths["/v1/users/{user_id}/recommendations"]["get"]["parameters"]}["k"]["schema"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 20, 5)
    session = components["SessionRequest"]
    assert session["additionalProperties"] is False and session["required"] == ["item_ids"]
    assert session["properties"]["item_ids"]["maxItems"] == 6
    assert session["properties"]["item_ids"]["items"]["maxLength"] == 16
    assert session["properties"]["k"]["maximum"] == 20
    assert set(components["ScoredItem"]["required"]) == {"item_id", "score"}
    reasons = components["UserRecommendations"]["properties"]["fallback_reason"]["anyOf"][0]["enum"]
    assert set(reasons) == {"unknown_user", "empty_history", "no_known_items", "popularity_model"}
