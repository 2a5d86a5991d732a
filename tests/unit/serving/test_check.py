"""The serving check: a real server on loopback answers the smoke set, or the check says what failed."""

from __future__ import annotations

import pytest

from recops.recommender import Recommender
from recops.serving.check import check_recommender, smoke_set
from recops.serving.params import ServingCheckParams, ServingParams
from tests.unit.serving.conftest import KINDS
from tests.unit.test_recommender import N_ITEMS, N_USERS, make_payload

# the logic is under test here, not this shared machine's latency: a generous budget for the good models
RELAXED = ServingParams(check=ServingCheckParams(users=6, sessions=4, similar_items=5, unknown_users=2, rounds=2,
                                                 warmup_rounds=1, p99_budget_ms=2000))


def test_smoke_set_is_drawn_from_the_model(payloads) -> None:
    rec = Recommender.from_payload(payloads["two_tower"])
    reqs = smoke_set(rec, ServingParams(check=ServingCheckParams(users=100, sessions=3, similar_items=4,
                                                                 unknown_users=2, k=4)))
    users = [r for r in reqs if r.path.startswith("/v1/users/") and r.fallback_reason != "unknown_user"]
    unknown = [r for r in reqs if r.fallback_reason == "unknown_user"]
    sessions = [r for r in reqs if r.method == "POST"]
    similar = [r for r in reqs if "/similar" in r.path]
    assert len(users) == N_USERS  # capped by the users the model has
    assert len(unknown) == 2 and len(sessions) == 3 and len(similar) == 4
    assert len(reqs) == N_USERS + 2 + 3 + 4
    for r in users:
        user = r.path.split("/")[3]
        assert r.excluded == frozenset(rec.history(user))
        assert r.expected_len == min(4, N_ITEMS - len(r.excluded))
    assert next(r for r in users if r.path.startswith("/v1/users/107/")).expected_len == 1  # saw all but one
    assert not any(rec.has_user(r.path.split("/")[3]) for r in unknown)
    assert all(set(r.body["item_ids"]) == r.excluded and r.body["k"] == 4 for r in sessions)
    assert smoke_set(rec, ServingParams(check=ServingCheckParams(seed=0))) == smoke_set(
        rec, ServingParams(check=ServingCheckParams(seed=0)))  # seeded


@pytest.mark.parametrize("kind", KINDS)
def test_good_models_pass(payloads, kind: str) -> None:
    rec = Recommender.from_payload(payloads[kind])
    result = check_recommender(rec, "3", RELAXED, model="recops-candidates")
    assert result.passed, result.message()
    n = len(smoke_set(rec, RELAXED))
    assert result.requests == n * RELAXED.check.rounds and result.failed_requests == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.reasons == [] and result.failures == []
    assert result.message().startswith("serving check of recops-candidates version 3 passed:")
    assert "failures" not in result.summary() and result.summary()["p99_ms"] == result.p99_ms


def test_model_answering_garbage_fails_with_the_reason(caplog) -> None:
    payload = make_payload("two_tower", seed=5)
    for tensor in payload["state_dict"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))  # a diverged training run
    rec = Recommender.from_payload(payload)
    result = check_recommender(rec, "4", RELAXED, model="recops-candidates")
    assert not result.passed
    # only the unknown users (popularity fallback, no model scores) get a right answer
    n = len(smoke_set(rec, RELAXED))
    assert result.failed_requests == (n - RELAXED.check.unknown_users) * RELAXED.check.rounds
    assert f"{result.failed_requests} of {result.requests} requests got a wrong answer" in result.reasons
    assert "HTTP 500" in result.failures[0] and "model version 4 produced non-finite scores" in result.failures[0]
    message = result.message()
    assert message.startswith("serving check of recops-candidates version 4 FAILED")
    assert "GET /v1/users/" in message and "more failed requests" in message


def test_slow_model_fails_the_latency_budget(payloads) -> None:
    params = ServingParams(check=RELAXED.check.model_copy(update={"p99_budget_ms": 0.001}))
    result = check_recommender(Recommender.from_payload(payloads["sasrec"]), "5", params)
    assert not result.passed and result.failed_requests == 0
    assert result.reasons == [f"p99 latency {result.p99_ms:.2f} ms exceeds the budget of 0.001 ms"]
    assert "FAILED" in result.message() and "budget 0.001 ms" in result.message()
