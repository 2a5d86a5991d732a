"""``serving:`` in params.yaml: typed, frozen, bounds checked with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from recops.config import ConfigError, load_params, parse_params
from recops.serving.params import ServingParams


def test_repository_params_hold_the_serving_section(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert params.serving == ServingParams()  # params.yaml spells out the defaults
    assert params.serving.check.p99_budget_ms == 20.0 and params.serving.model_alias == "champion"


@pytest.mark.parametrize(("serving", "message"), [
    ({"default_k": 50, "max_k": 20}, "serving.default_k (50) must not exceed serving.max_k (20)"),
    ({"max_k": 5, "default_k": 5}, "serving.check.k (10) must not exceed serving.max_k (5)"),
    ({"port": 70000}, "serving.port: Input should be less than or equal to 65535"),
    ({"poll_seconds": 0}, "serving.poll_seconds: Input should be greater than 0"),
    ({"check": {"p99_budget": 5}}, "serving.check.p99_budget: unknown key"),
])
def test_invalid_serving_settings_are_named(serving: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"serving": serving})
    assert message in str(err.value)


def test_serving_params_are_frozen() -> None:
    params = parse_params({"serving": {"max_k": 50}})
    assert params.serving.max_k == 50
    with pytest.raises(ValueError, match="frozen"):
        params.serving.max_k = 10  # type: ignore[misc]
