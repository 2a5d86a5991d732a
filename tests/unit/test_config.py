from pathlib import Path

import pytest
import yaml

from recops.config import ConfigError, Env, Params, load_params, parse_params


def test_repository_params_load(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert params.replay.periods == 120
    assert params.source.movielens.dataset == "ml-latest-small"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"replay": {"periodz": 3}})
    assert "replay.periodz" in str(err.value)
    assert "unknown key" in str(err.value)


def test_invalid_value_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"validation": {"volume": {"min_ratio": 3, "max_ratio": 2}}, "period": {"days": 0}})
    msg = str(err.value)
    assert "period.days" in msg
    assert "validation.volume" in msg


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"replay\.start_date"):
        parse_params({"replay": {"start_date": "not a date"}})


def test_params_are_frozen() -> None:
    p = Params()
    with pytest.raises(Exception, match="frozen"):
        p.replay.periods = 3  # type: ignore[misc]


def test_event_log_requires_path() -> None:
    with pytest.raises(ConfigError, match="source.event_log.path"):
        parse_params({"source": {"kind": "event_log"}})


def test_yaml_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("replay: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)


def test_endpoints_come_from_environment() -> None:
    env = Env.from_environ({"RECOPS_STORAGE_URL": "s3://b/p", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert env.storage_url == "s3://b/p"
    assert env.s3_endpoint_url == "http://127.0.0.1:9000"
    assert Env.from_environ({}).storage_url is None
    # no secret or endpoint field exists in params
    assert "endpoint" not in yaml.safe_dump(Params().model_dump(mode="json"))


def test_overrides_are_validated_and_name_the_key(repo_root):
    from recops.config import with_overrides

    params = load_params(repo_root / "params.yaml")
    changed = with_overrides(params, ["model.kind=popularity", "monitor.drift.thresholds.genre=0.3"])
    assert changed.model.kind == "popularity" and changed.monitor.drift.thresholds["genre"] == 0.3
    assert params.monitor.drift.thresholds["genre"] != 0.3  # the loaded params are left as they were
    with pytest.raises(ConfigError, match="monitor.drift.colour"):
        with_overrides(params, ["monitor.drift.colour=1"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        with_overrides(params, ["model.kind"])
    with pytest.raises(ConfigError, match="model.kind is not a section"):
        with_overrides(params, ["model.kind.x=1"])
