"""``recops <stage>``: one thin command per pipeline stage.

The DVC stage, the Airflow task and the MLflow run for a stage share the stage's
name and call the same function through this CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from recops import manifests
from recops.config import ConfigError, Env, Params, load_params

app = typer.Typer(
    name="recops",
    help="recops: a recommender that keeps itself fresh. Each command is one pipeline stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1
EXIT_VALIDATION_FAILED = 3
EXIT_GATE_FAILED = 4

log = logging.getLogger("recops")


class _State:
    params_path: Path = Path("params.yaml")


state = _State()

DateOpt = Annotated[
    dt.datetime | None,
    typer.Option("--date", formats=["%Y-%m-%d"], help="Logical date: the start of the period (YYYY-MM-DD)."),
]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, console=None, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("great_expectations", "fsspec", "botocore", "s3fs", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main(
    params: Annotated[Path, typer.Option("--params", envvar="RECOPS_PARAMS", help="Path to params.yaml.")] = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    _setup_logging(verbose)
    state.params_path = params


def _fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _load() -> tuple[Params, Env]:
    try:
        return load_params(state.params_path), Env.from_environ()
    except ConfigError as err:
        raise _fail(str(err)) from None


def _storage(params: Params, env: Env):
    from recops.storage import Storage

    return Storage(env.storage_url or params.storage.root, s3_endpoint_url=env.s3_endpoint_url)


def _as_date(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value is not None else None


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=1, sort_keys=True, default=str))


@app.command()
def ingest(
    date: DateOpt = None,
    until: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Land every period up to this date.")] = None,
) -> None:
    """Land one period (--date) or every period of the source into landing/."""
    from recops.ingest import ingest as run

    params, env = _load()
    storage = _storage(params, env)
    try:
        report = run(params, env, storage, date=_as_date(date), until=_as_date(until))
    except (ValueError, FileNotFoundError, OSError) as err:
        raise _fail(str(err)) from None
    manifests.write_stage_manifest("ingest", manifests.lake_manifest(storage, ["landing"]))
    typer.echo(f"ingest: landed {len(report.landed)} period(s), {report.rows} interactions -> {storage.uri('landing')}")


@app.command()
def validate(
    date: DateOpt = None,
    suites: Annotated[Path, typer.Option(help="Folder of expectation suites.")] = Path("expectations"),
    force: Annotated[bool, typer.Option(help="Re-validate periods already decided.")] = False,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Exit 0 even when periods are quarantined (batch replays).")
    ] = False,
) -> None:
    """Run the expectation suites; accept into raw/ or quarantine each landed period."""
    from recops.validation import Suites, ValidationFailed
    from recops.validation import validate as run

    params, env = _load()
    storage = _storage(params, env)
    try:
        results = run(params, storage, Suites(suites), date=_as_date(date), force=force)
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    manifests.write_stage_manifest("validate", manifests.lake_manifest(storage, ["raw", "quarantine"]))
    summary = manifests.validation_summary(storage, results)
    manifests.write_report("validate", summary)
    typer.echo(
        f"validate: {summary['run']['accepted']} accepted, {summary['run']['quarantined']} quarantined, "
        f"{summary['run']['unchanged']} unchanged (lake: {summary['accepted_periods']} accepted, "
        f"{summary['quarantined_periods']} quarantined)"
    )
    failed = [r for r in results if r.status == "quarantined"]
    if failed:
        typer.secho(str(ValidationFailed(results)), fg=typer.colors.RED, err=True)
        if not keep_going:
            raise typer.Exit(EXIT_VALIDATION_FAILED)


@app.command()
def features(
    date: DateOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: features.output_dir).")] = None,
) -> None:
    """Rebuild the training set from all accepted periods up to --date."""
    from recops.features import run_features

    params, env = _load()
    storage = _storage(params, env)
    try:
        summary = run_features(
            params.features,
            storage,
            params.period.days,
            until=_as_date(date),
            out_dir=out,
            summary_path=manifests.report_path("features"),
        )
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    typer.echo(
        f"features: {summary['rows']} interactions, {summary['users']} users, {summary['items']} items "
        f"({summary['new_items_this_period']} new items this period) up to {summary['logical_date']}"
    )


@app.command()
def monitor(date: DateOpt = None) -> None:
    """Drift (Evidently), the champion's live performance, and the retrain / rollback decision for a period."""
    from recops.monitor import run_monitor

    params, env = _load()
    try:
        report = run_monitor(params, _storage(params, env), date=_as_date(date))
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    d, drift, perf = report["decision"], report.get("drift") or {}, (report.get("performance") or {}).get("champion")
    metric = params.monitor.performance.metric
    typer.echo(
        f"monitor: {report['date']} {report['status']}, {report.get('rows', 0)} interactions, drift share "
        f"{drift.get('share', float('nan')):.0%} (triggers {drift.get('trigger_share', float('nan')):.0%}), "
        f"champion {'v' + report['champion'] if report['champion'] else 'none'}"
        f"{f' live {metric} {perf[metric]:.4f}' if perf and metric in perf else ''} -> "
        f"{'RETRAIN' if d['retrain'] else 'no retrain'}: {d['reason']}"
        f"{'; ROLLBACK to v' + str(d.get('to')) + ': ' + d['rollback_reason'] if d.get('rollback') else ''}"
        f" ({report['lake']})"
    )


@app.command()
def train(
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last epoch checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train the model chosen in params.yaml (model.kind) on the features; log it to MLflow.

    Data-parallel under torchrun (`torchrun --standalone --nproc_per_node N -m recops train`): rank 0
    logs to MLflow and writes the model; the other ranks only train their shard."""
    from recops.distributed import DistributedError, World
    from recops.lifecycle import train_stage
    from recops.train import ResumeError, run_train

    params, _ = _load()
    try:
        world = World.from_environ()
        if not world.is_main:
            logging.getLogger("recops").setLevel(logging.WARNING)  # rank 0 reports for the job
            run_train(params, params.features.output_dir, resume=resume, progress=False)
            return
        result = train_stage(params, resume=resume, progress=progress)
    except (ValueError, FileNotFoundError, ResumeError, DistributedError) as err:
        raise _fail(str(err)) from None
    val = result.get("val", {})
    typer.echo(
        f"train: {result['model']} best epoch {result['best_epoch']}/{result['epochs_run']}, "
        f"val ndcg@10 {val.get('ndcg@10', float('nan')):.4f} on {result['device']} (run {result['mlflow_run_id']})"
    )


@app.command()
def evaluate() -> None:
    """Full-catalog ranking metrics of the trained model on the test window (+ slices)."""
    from recops.lifecycle import evaluate_stage

    params, _ = _load()
    try:
        report = evaluate_stage(params)
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    o, b = report["overall"], report["popularity_baseline"]
    typer.echo(
        f"evaluate: {int(o['n_users'])} users, ndcg@10 {o['ndcg@10']:.4f} recall@20 {o['recall@20']:.4f} "
        f"mrr {o['mrr']:.4f} (popularity: ndcg@10 {b['ndcg@10']:.4f} recall@20 {b['recall@20']:.4f})"
    )


@app.command()
def gate() -> None:
    """Floors and paired bootstrap against the champion; exit 4 when the candidate fails."""
    from recops.lifecycle import GateFailed, gate_stage

    params, _ = _load()
    try:
        result = gate_stage(params)
    except GateFailed as err:
        raise _fail(str(err), EXIT_GATE_FAILED) from None
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    vs = f"champion v{result['champion_version']}" if result["champion_version"] else "no champion yet"
    typer.echo(f"gate: passed ({vs})")


@app.command()
def register() -> None:
    """Register a gate-passing candidate (alias challenger); bootstrap the first champion if allowed."""
    from recops.lifecycle import GateFailed, register_stage

    params, env = _load()
    try:
        result = register_stage(params, _storage(params, env))
    except GateFailed as err:
        raise _fail(str(err), EXIT_GATE_FAILED) from None
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    typer.echo(
        f"register: {result['candidate_model']} v{result['candidate_version']} is challenger; champion "
        f"{'v' + result['champion_version'] if result['champion_version'] else 'none'}"
        f"{' (bootstrapped)' if result['bootstrapped'] else ''}"
    )


@app.command()
def promote(
    version: Annotated[str, typer.Option("--version", help="Candidate version (recops-candidates) to promote.")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who approves this promotion.")],
    note: Annotated[str | None, typer.Option("--note")] = None,
) -> None:
    """Reviewer promotion: after the serving check (serving.check), copy a candidate into the production
    model and move champion to it."""
    from recops.lifecycle import promote_stage
    from recops.registry import RegistryError

    params, env = _load()
    try:
        result = promote_stage(params, _storage(params, env), version, reviewer, note)
    except (RegistryError, ValueError) as err:
        raise _fail(str(err)) from None
    check = result["serving_check"]
    typer.echo(f"promote: {result['champion_model']} v{result['champion_version']} is champion (by {reviewer}), "
               f"serving check p99 {check['p99_ms']:.2f} ms over {check['requests']} requests")


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="Production version to restore (default: previous_champion).")] = None,
    who: Annotated[str, typer.Option("--who", help="Who rolls back.")] = "recops",
    reason: Annotated[str, typer.Option("--reason")] = "manual rollback",
    auto: Annotated[bool, typer.Option("--auto", help="Roll back only if the monitor's decision for --date says so.")] = False,
    date: DateOpt = None,
) -> None:
    """Move champion back to previous_champion (or to --to); with --auto, as the monitor decided for --date."""
    from recops.lifecycle import rollback_stage
    from recops.registry import RegistryError

    params, env = _load()
    storage = _storage(params, env)
    if auto:
        from recops.monitor import apply_rollback

        if date is None or to is not None:
            raise _fail("--auto needs --date (the monitored period) and takes no --to")
        try:
            result = apply_rollback(params, storage, date.date())
        except (RegistryError, ValueError, FileNotFoundError) as err:
            raise _fail(str(err)) from None
        typer.echo(f"rollback: {'v' + result['from'] + ' -> v' + result['to'] if result['rolled_back'] else 'none'}"
                   f" ({result.get('message') or result['reason']})")
        return
    try:
        result = rollback_stage(params, storage, to, who, reason)
    except (RegistryError, ValueError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"rollback: {result['champion_model']} v{result['champion_version']} is champion")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port).")] = None,
    model_file: Annotated[Path | None, typer.Option(
        "--model-file", help="Serve this model.pt (reloaded when it changes) instead of the registry champion.")] = None,
    poll_seconds: Annotated[float | None, typer.Option(help="Seconds between alias look-ups (default: serving.poll_seconds).")] = None,
) -> None:
    """Serve recommendations over HTTP from models:/<registry.production_model>@champion, hot-swapping new versions."""
    from pydantic import ValidationError

    from recops.serving.holder import FileSource, RegistrySource
    from recops.serving.params import ServingParams
    from recops.serving.server import build_app
    from recops.serving.server import serve as run_server

    params, _ = _load()
    overrides = {k: v for k, v in {"host": host, "port": port, "poll_seconds": poll_seconds}.items() if v is not None}
    try:
        serving = ServingParams.model_validate({**params.serving.model_dump(), **overrides})
    except ValidationError as err:
        raise _fail(f"invalid serve option: {err}") from None
    if model_file is not None and not model_file.is_file():
        raise _fail(f"{model_file}: model file not found")
    import torch

    torch.set_num_threads(serving.torch_threads)
    source = (FileSource(model_file) if model_file is not None
              else RegistrySource(params.registry.production_model, serving.model_alias))
    typer.echo(f"serve: {source.describe()} on http://{serving.host}:{serving.port} "
               f"(new versions picked up every {serving.poll_seconds:g} s)")
    run_server(build_app(serving, source, freeze_gc=True), serving.host, serving.port)


@app.command("serving-check")
def serving_check(
    version: Annotated[str, typer.Option("--version", help="Version of --model to check.")],
    model: Annotated[str | None, typer.Option("--model", help="Registered model (default: registry.candidates_model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Load a registered version in the serving code and time a smoke set against serving.check (exit 1 on failure)."""
    from recops.lifecycle import serving_check_stage
    from recops.registry import RegistryError

    params, _ = _load()
    try:
        result = serving_check_stage(params, version, model=model)
    except (RegistryError, ValueError) as err:
        raise _fail(str(err)) from None
    if as_json:
        _print_json(result.as_dict())
    if not result.passed:
        raise _fail(result.message())
    typer.echo(result.message())


@app.command()
def simulate(
    periods: Annotated[int, typer.Option("--periods", help="Cut the log into N periods and replay them all.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the timeline report and the workspace.")],
    inject: Annotated[list[str] | None, typer.Option(
        "--inject", help="drift@P (popularity shock from period P on) or bad-model@P (degraded champion at P).")] = None,
    auto_approve: Annotated[bool, typer.Option(
        "--auto-approve", help="Simulation only: promote gate-passing candidates without a reviewer.")] = False,
    shock_items: Annotated[int, typer.Option(help="Items on each side of the popularity shock.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the injections.")] = 0,
    suites: Annotated[Path, typer.Option(help="Folder of expectation suites.")] = Path("expectations"),
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-S", help="Override a param for this simulation only: dotted.key=value (repeatable).")] = None,
) -> None:
    """Replay N periods through ingest -> validate -> features -> monitor -> retrain -> gate -> promote, no Airflow."""
    from recops.config import with_overrides
    from recops.simulate import Injection
    from recops.simulate import simulate as run

    params, env = _load()
    try:
        params = with_overrides(params, set_ or [])
    except ConfigError as err:
        raise _fail(str(err)) from None
    try:
        injections = [Injection.parse(text, periods) for text in inject or []]
        report = run(params, env, periods=periods, injections=injections, output=output,
                     auto_approve=auto_approve, shock_items=shock_items, seed=seed, suites=suites)
    except (ValueError, OSError) as err:
        raise _fail(str(err)) from None
    counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
    typer.echo(f"simulate: {len(report['periods'])} periods ({counts}) -> {output / 'timeline.html'}")


benchmark_app = typer.Typer(help="Benchmarks against published protocols.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("sequential")
def benchmark_sequential(
    sequences: Annotated[Path, typer.Option("--sequences", exists=True, dir_okay=False, help="Sequence file.")],
    fmt: Annotated[str, typer.Option("--format", help="pairs: 'user item' lines; lines: 'user i1 i2 ...'.")] = "pairs",
    output: Annotated[Path | None, typer.Option("--output", help="Write the metrics JSON here.")] = None,
    model: Annotated[str, typer.Option("--model", help="Model kind to train (settings from params.yaml).")] = "sasrec",
) -> None:
    """Leave-one-out next-item benchmark (HR/NDCG@5,10,20, full ranking, history masked)."""
    from recops.benchmark import run_sequential

    if fmt not in ("pairs", "lines"):
        raise _fail(f"--format must be 'pairs' or 'lines', not {fmt!r}")
    params, _ = _load()
    try:
        result = run_sequential(params, sequences, fmt, model)  # type: ignore[arg-type]
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    _print_json(result)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=1) + "\n")


@app.command()
def summary(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False) -> None:
    """Print what the pipeline produced: periods, dataset size, and model/champion once they exist."""
    data = manifests.pipeline_summary()
    if as_json:
        _print_json(data)
        return
    for line in manifests.summary_lines(data):
        typer.echo(line)


def run() -> None:  # pragma: no cover - console entry for `python -m recops`
    sys.exit(app())
