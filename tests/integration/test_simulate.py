"""`recops simulate` on ml-latest-small: the whole loop with injected drift and a bad model, and without."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
import yaml

from recops.config import Env, load_params
from recops.simulate import Injection, simulate

pytestmark = pytest.mark.integration

PERIODS, BAD_AT, DRIFT_AT = 30, 10, 18


def _params(repo_root: Path, tmp: Path, ml_small: Path):
    """The repository's params with a fast model (recency-weighted popularity, which adapts to a shock) and
    validation / test windows of about one period each, so that a retrain soon after a shock trains on it."""
    data = yaml.safe_load((repo_root / "params.yaml").read_text())
    data["model"]["kind"] = "popularity"
    data["model"]["popularity"]["half_life_days"] = 2
    data["gate"]["champion"]["n_bootstrap"] = 200
    data["features"]["split"].update(val_fraction=0.035, test_fraction=0.035)
    data["monitor"]["drift"]["consecutive_periods"] = 3
    data["source"]["cache_dir"] = str(tmp / "cache")
    data["monitor"]["alert_callback"] = "recops_test_alerts:record"
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp / "recops_test_alerts.py").write_text(textwrap.dedent("""
        import json, pathlib
        OUT = pathlib.Path(__file__).with_name("alerts.jsonl")
        def record(event):
            with OUT.open("a") as f:
                f.write(json.dumps(event) + "\\n")
    """))
    return load_params(path), Env(data_mirror=str(ml_small))


def _events(report, kind, **match):
    return [e for e in report["events"] if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def injected(tmp_path_factory, repo_root, ml_small):
    tmp = tmp_path_factory.mktemp("simulate")
    params, env = _params(repo_root, tmp, ml_small)
    import sys

    sys.path.insert(0, str(tmp))
    try:
        report = simulate(params, env, periods=PERIODS, output=tmp / "out", auto_approve=True,
                          injections=[Injection("drift", DRIFT_AT), Injection("bad-model", BAD_AT)],
                          suites=repo_root / "expectations")
    finally:
        sys.path.remove(str(tmp))
    return report, tmp, params


def test_injected_drift_triggers_exactly_one_retrain(injected):
    report, _, _ = injected
    after = [e for e in _events(report, "retrain_request") if e["period"] >= DRIFT_AT]
    assert len(after) == 1, report["events"]  # one request for the whole episode: no storm
    request = after[0]
    assert request["trigger"] == "drift" and DRIFT_AT < request["period"] <= DRIFT_AT + 4
    promoted = [e for e in _events(report, "promote") if e["period"] == request["period"]]
    assert promoted and promoted[0]["reviewer"] == "recops-simulation", report["events"]
    shares = {p["period"]: p["trigger_share"] for p in report["periods"]}
    threshold = report["share_threshold"]
    assert all(shares[p] < threshold for p in range(8, DRIFT_AT)), shares  # quiet before the shock
    assert all(shares[p] >= threshold for p in range(DRIFT_AT, request["period"] + 1)), shares
    assert all(shares[p] < threshold for p in range(request["period"] + 1, PERIODS + 1)), shares  # fixed


def test_bad_model_is_rolled_back_within_the_policy_window(injected):
    report, tmp, params = injected
    bad = _events(report, "inject_bad_model")
    assert [e["period"] for e in bad] == [BAD_AT]
    rollbacks = _events(report, "rollback")
    assert len(rollbacks) == 1, report["events"]
    rb = rollbacks[0]
    assert rb["from"] == bad[0]["version"] and rb["to"] == bad[0]["degraded_from"]
    assert BAD_AT < rb["period"] <= BAD_AT + params.monitor.rollback.consecutive_periods
    # the alert went to the log and to the configured callback
    alerts = [json.loads(line) for line in (tmp / "alerts.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["from"], a["to"]) for a in alerts] == [("rollback", rb["from"], rb["to"])]


def test_registry_aliases_tags_and_audit_log_after_the_rollback(injected):
    report, tmp, params = injected
    rb = _events(report, "rollback")[0]
    work = tmp / "out" / "workspace"
    db = sqlite3.connect(work / "mlflow.db")
    aliases = dict(db.execute("select alias, version from registered_model_aliases where name = ?",
                              (params.registry.production_model,)).fetchall())
    tags = {(v, k): val for v, k, val in db.execute(
        "select version, key, value from model_version_tags where name = ?", (params.registry.production_model,))}
    experiments = dict(db.execute("select name, experiment_id from experiments").fetchall())
    monitor_runs = db.execute("select count(*) from runs where experiment_id = ? and name = 'monitor'",
                              (experiments[params.monitor.experiment],)).fetchone()[0]
    db.close()
    last_champion = report["periods"][-1]["champion"]
    assert aliases["champion"] == int(last_champion)
    assert tags[(int(rb["from"]), "demoted_by")] == "recops-monitor"
    assert "did worse than previous champion" in tags[(int(rb["from"]), "rollback_reason")]
    assert tags[(int(rb["to"]), "restored_by")] == "recops-monitor"
    assert tags[(int(rb["from"]), "promoted_by")] == "recops-simulation:bad-model"
    assert monitor_runs == len([p for p in report["periods"] if p["accepted"]])
    audit = [json.loads(line) for line in
             (work / "data/lake/state/audit/model_promotions.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit].count("rollback") == 1
    entry = next(a for a in audit if a["action"] == "rollback")
    assert (entry["who"], entry["from"], entry["to"]) == ("recops-monitor", rb["from"], rb["to"])


def test_timeline_report_and_per_period_evidently_outputs(injected):
    report, tmp, _ = injected
    out = tmp / "out"
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "timeline.html").read_text()
    assert "data:image/png;base64," in page and "rollback" in page and "inject_bad_model" in page
    saved = json.loads((out / "timeline.json").read_text())
    assert saved["events"] == report["events"] and len(saved["periods"]) == PERIODS
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events == report["events"]
    period = out / "workspace/data/lake/monitoring/periods" / f"date={report['periods'][-1]['date']}"
    names = {p.name for p in period.iterdir()}
    assert {"summary.json", "data_drift.html", "data_drift.json", "prediction_drift.html",
            "prediction_drift.json", "_SUCCESS"} <= names
    summary = json.loads((period / "summary.json").read_text())
    assert set(summary["drift"]["data"]["columns"]) == {"rating", "item_popularity", "user_activity",
                                                        "sequence_length", "genre", "new_item", "new_user"}
    assert summary["performance"]["champion"]["n_cases"] >= 5
    assert json.loads((period / "data_drift.json").read_text())["metrics"]


def test_without_injections_there_is_no_rollback(tmp_path, repo_root, ml_small):
    params, env = _params(repo_root, tmp_path, ml_small)
    params = params.model_copy(update={"monitor": params.monitor.model_copy(
        update={"alert_callback": None, "html_reports": False, "retrain_every_periods": 6})})
    report = simulate(params, env, periods=20, output=tmp_path / "out", auto_approve=True, injections=[],
                      suites=repo_root / "expectations")
    assert report["counts"]["promote"] >= 2, report["events"]  # so there was a champion to roll back
    assert report["counts"]["rollback"] == 0, report["events"]
    assert not _events(report, "retrain_request", trigger="drift"), report["events"]


@pytest.mark.parametrize(("text", "needle"), [
    ("drift", "expected KIND@PERIOD"), ("flood@3", "unknown kind 'flood'"), ("drift@0", "outside 1..10"),
])
def test_bad_injections_are_refused(text, needle):
    with pytest.raises(ValueError, match=needle):
        Injection.parse(text, 10)
