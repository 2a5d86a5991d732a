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
    """Summarise a period (new users/items vs earlier periods) and decide whether to request retraining."""
    from recops.monitor import monitor as run
    from recops.monitor import write_report

    params, env = _load()
    try:
        report = run(_storage(params, env), params.monitor, date=_as_date(date))
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    path = write_report(report)
    s, d = report["summary"], report["decision"]
    typer.echo(
        f"monitor: {report['date']} {report['status']}, {s['rows']} interactions, "
        f"{s.get('new_items', 0)} new items, {s.get('new_users', 0)} new users -> "
        f"{'RETRAIN' if d['retrain'] else 'no retrain'}: {d['reason']} ({path})"
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
    """Reviewer promotion: copy a candidate into the production model and move champion to it."""
    from recops.lifecycle import promote_stage
    from recops.registry import RegistryError

    params, env = _load()
    try:
        result = promote_stage(params, _storage(params, env), version, reviewer, note)
    except (RegistryError, ValueError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"promote: {result['champion_model']} v{result['champion_version']} is champion (by {reviewer})")


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="Production version to restore (default: previous_champion).")] = None,
    who: Annotated[str, typer.Option("--who", help="Who rolls back.")] = "recops",
    reason: Annotated[str, typer.Option("--reason")] = "manual rollback",
) -> None:
    """Move champion back to previous_champion (or to --to)."""
    from recops.lifecycle import rollback_stage
    from recops.registry import RegistryError

    params, env = _load()
    try:
        result = rollback_stage(params, _storage(params, env), to, who, reason)
    except (RegistryError, ValueError) as err:
        raise _fail(str(err)) from None
    typer.echo(f"rollback: {result['champion_model']} v{result['champion_version']} is champion")


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
