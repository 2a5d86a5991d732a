"""``recops validate``: Great Expectations gate between landing and raw.

For each landed period the catalog snapshot and the interactions are checked against
the JSON suites in ``expectations/`` (thresholds filled in from params.yaml). A
passing period is accepted into ``raw/``; a failing one is copied to
``quarantine/<dataset>/date=D/`` together with the validation result JSON and a Data
Docs HTML page, and nothing under ``raw/`` changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from recops import periods
from recops.config import Params
from recops.ingest import CATALOG, INTERACTIONS
from recops.storage import Partition, Storage, canonical_json
from recops.tables import (
    ParseError,
    normalise_catalog,
    normalise_interactions,
    parse_table,
    to_parquet_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_SUITE_DIR = Path("expectations")


@dataclass(frozen=True)
class Failure:
    """One failed expectation, described for a person."""

    dataset: str
    expectation: str
    column: str | None
    detail: str

    def __str__(self) -> str:
        col = f"({self.column})" if self.column else ""
        return f"{self.dataset}: {self.expectation}{col} failed: {self.detail}"


@dataclass
class PeriodResult:
    date: dt.date
    status: str  # "accepted" | "quarantined" | "unchanged"
    rows: int = 0
    failures: list[Failure] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "status": self.status,
            "rows": self.rows,
            "failures": [str(f) for f in self.failures],
        }


class ValidationFailed(RuntimeError):
    """At least one period was quarantined."""

    def __init__(self, results: list[PeriodResult]) -> None:
        self.results = results
        bad = [r for r in results if r.status == "quarantined"]
        lines = [f"{len(bad)} period(s) quarantined:"]
        for r in bad:
            lines += [f"  {r.date.isoformat()} {f}" for f in r.failures]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- GE adapter
class Suites:
    """Loads the JSON suites and runs them on pandas frames with GX 1.x (ephemeral context)."""

    def __init__(self, suite_dir: Path = DEFAULT_SUITE_DIR) -> None:
        self.suite_dir = Path(suite_dir)
        self._raw = {}
        for name in (INTERACTIONS, CATALOG):
            path = self.suite_dir / f"{name}.json"
            try:
                self._raw[name] = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise FileNotFoundError(f"expectation suite {path} not found") from None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(canonical_json(self._raw)).hexdigest()

    @cached_property
    def _gx(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas("recops")
        batches = {
            name: source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name) for name in self._raw
        }
        suites = {name: gx.ExpectationSuite(**raw) for name, raw in self._raw.items()}
        return context, batches, suites

    def run(self, name: str, frame: pd.DataFrame, parameters: dict[str, Any]) -> Any:
        _, batches, suites = self._gx
        batch = batches[name].get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(suites[name], result_format="SUMMARY", expectation_parameters=parameters)


def describe_failures(dataset: str, result: Any) -> list[Failure]:
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kw = cfg.kwargs
        res = r.result or {}
        if r.exception_info and r.exception_info.get("raised_exception"):
            detail = f"could not be evaluated: {r.exception_info.get('exception_message')}"
        elif "unexpected_count" in res:
            sample = res.get("partial_unexpected_list") or []
            detail = (
                f"{res['unexpected_count']} of {res.get('element_count', '?')} rows unexpected"
                f" ({res.get('unexpected_percent', 0):.2f}%)"
            )
            if sample:
                detail += f", e.g. {sample[:5]}"
        else:
            detail = f"observed {res.get('observed_value')!r}"
        bounds = {k: kw[k] for k in ("min_value", "max_value", "mostly", "column_set", "type_") if kw.get(k) is not None}
        if bounds:
            detail += f"; expected {bounds}"
        failures.append(Failure(dataset, cfg.type, kw.get("column"), detail))
    return failures


def data_docs_html(result: Any | None, title: str, failures: list[Failure]) -> str:
    """A Data Docs page for a validation result (GX's own renderer when there is a result)."""
    if result is not None:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    items = "".join(f"<li>{html.escape(str(f))}</li>" for f in failures)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1><p>The batch could not be read, so no expectation ran.</p><ul>{items}</ul></body></html>"


# --------------------------------------------------------------------------- the stage
def _read_landed(storage: Storage, p: Partition, normalise) -> tuple[pd.DataFrame | None, list[Failure]]:
    files = storage.read_partition(p)
    frames, failures = [], []
    for name, data in sorted(files.items()):
        try:
            frames.append(normalise(parse_table(name, data)))
        except ParseError as err:
            failures.append(Failure(p.dataset, "file_is_readable", None, str(err)))
    if failures:
        return None, failures
    if not frames:
        return None, [Failure(p.dataset, "file_is_readable", None, f"partition {p.key} holds no data file")]
    return pd.concat(frames, ignore_index=True), []


def volume_bounds(storage: Storage, date: dt.date, params: Params) -> tuple[int, int]:
    """Row-count bounds from the trailing mean of accepted periods before ``date``."""
    v = params.validation.volume
    previous = [d for d in storage.partition_dates("raw", INTERACTIONS) if d < date][-v.trailing_periods :]
    counts = [storage.manifest(Partition("raw", INTERACTIONS, d))["rows"] for d in previous]
    if not counts:
        return v.min_rows, v.max_rows
    mean = sum(counts) / len(counts)
    return max(v.min_rows, int(v.min_ratio * mean)), min(v.max_rows, int(v.max_ratio * mean) + 1)


class Validator:
    def __init__(self, params: Params, storage: Storage, suites: Suites) -> None:
        self.params, self.storage, self.suites = params, storage, suites
        self._accepted_catalogs: dict[bytes, pd.DataFrame] = {}  # catalog snapshots that passed in this run

    def _fingerprint(self, date: dt.date) -> str | None:
        parts = [self.storage.manifest(Partition("landing", ds, date)) for ds in (INTERACTIONS, CATALOG)]
        if parts[0] is None:
            return None
        payload = {
            "landing": [p["files"] if p else None for p in parts],
            "suites": self.suites.fingerprint,
            "params": self.params.validation.model_dump(),
            "period_days": self.params.period.days,
        }
        return hashlib.sha256(canonical_json(payload)).hexdigest()

    def _decided(self, date: dt.date, fingerprint: str) -> bool:
        for area in ("raw", "quarantine"):
            m = self.storage.manifest(Partition(area, INTERACTIONS, date))
            if m and m.get("fingerprint") == fingerprint:
                return True
        return False

    def _catalog(self, date: dt.date) -> tuple[pd.DataFrame | None, Any, list[Failure], bool]:
        """The period's catalog: landed with it (validated here) or the latest accepted one."""
        landed = Partition("landing", CATALOG, date)
        landed_manifest = self.storage.manifest(landed)
        if landed_manifest is not None:
            digest = canonical_json(landed_manifest["files"])
            if digest in self._accepted_catalogs:  # same snapshot already passed the same suite
                return self._accepted_catalogs[digest], None, [], True
            frame, failures = _read_landed(self.storage, landed, normalise_catalog)

            if failures:
                return None, None, failures, True
            result = self.suites.run(CATALOG, frame, {})
            failures = describe_failures(CATALOG, result)
            if not failures:
                self._accepted_catalogs[digest] = frame
            return frame, result, failures, True
        accepted = [d for d in self.storage.partition_dates("raw", CATALOG) if d <= date]
        if not accepted:
            msg = f"no catalog landed for {date} and none accepted before it"
            return None, None, [Failure(CATALOG, "catalog_is_available", None, msg)], False
        files = self.storage.read_partition(Partition("raw", CATALOG, accepted[-1]))
        return parse_table("items.parquet", files["items.parquet"]), None, [], False

    def validate_period(self, date: dt.date, force: bool = False) -> PeriodResult:
        fingerprint = self._fingerprint(date)
        if fingerprint is None:
            raise FileNotFoundError(
                f"nothing landed for {date.isoformat()} at {self.storage.uri('landing', INTERACTIONS)}; run `recops ingest --date {date.isoformat()}` first"
            )
        if not force and self._decided(date, fingerprint):
            return PeriodResult(date, "unchanged")

        catalog, catalog_result, failures, catalog_landed = self._catalog(date)
        interactions, result = None, None
        if not failures:
            interactions, failures = _read_landed(
                self.storage, Partition("landing", INTERACTIONS, date), normalise_interactions
            )
        if interactions is not None:
            checked = interactions.copy()
            if "item_id" in checked:
                checked["item_in_catalog"] = checked["item_id"].isin(set(catalog["item_id"]))
            lo, hi = periods.period_bounds(date, self.params.period.days)
            min_rows, max_rows = volume_bounds(self.storage, date, self.params)
            v = self.params.validation
            result = self.suites.run(
                INTERACTIONS,
                checked,
                {
                    "min_rows": min_rows,
                    "max_rows": max_rows,
                    "rating_min": v.rating_min,
                    "rating_max": v.rating_max,
                    "period_start": lo,
                    "period_last_second": hi - 1,
                    "min_known_item_share": 1.0 - v.max_unknown_item_share,
                },
            )
            failures = describe_failures(INTERACTIONS, result)

        rows = 0 if interactions is None else len(interactions)
        if failures:
            self._quarantine(date, fingerprint, failures, result or catalog_result, catalog_landed)
            return PeriodResult(date, "quarantined", rows, failures)
        self._accept(date, fingerprint, interactions, catalog if catalog_landed else None)
        return PeriodResult(date, "accepted", rows)

    def _accept(self, date: dt.date, fingerprint: str, interactions: pd.DataFrame, catalog: pd.DataFrame | None) -> None:
        meta = {"fingerprint": fingerprint}
        if catalog is not None:
            self.storage.write_partition(
                Partition("raw", CATALOG, date), {"items.parquet": to_parquet_bytes(catalog)}, {**meta, "rows": len(catalog)}
            )
        frame = interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
        self.storage.write_partition(
            Partition("raw", INTERACTIONS, date),
            {"part-0.parquet": to_parquet_bytes(frame)},
            {**meta, "rows": len(frame)},
        )
        self.storage.delete_partition(Partition("quarantine", INTERACTIONS, date))
        self.storage.delete_partition(Partition("quarantine", CATALOG, date))

    def _quarantine(self, date: dt.date, fingerprint: str, failures: list[Failure], result: Any, catalog_landed: bool) -> None:
        title = f"recops validation of {date.isoformat()}"
        report = {
            "date": date.isoformat(),
            "success": False,
            "failures": [str(f) for f in failures],
            "great_expectations": result.describe_dict() if result is not None else None,
        }
        extra = {
            "validation_result.json": canonical_json(report),
            "data_docs.html": data_docs_html(result, title, failures).encode(),
        }
        datasets = [INTERACTIONS] + ([CATALOG] if catalog_landed else [])
        for ds in datasets:
            files = {f"landed-{k}": v for k, v in self.storage.read_partition(Partition("landing", ds, date)).items()}
            self.storage.write_partition(
                Partition("quarantine", ds, date),
                {**files, **extra},
                {"fingerprint": fingerprint, "failures": [str(f) for f in failures]},
            )


def validate(
    params: Params, storage: Storage, suites: Suites, date: dt.date | None = None, force: bool = False
) -> list[PeriodResult]:
    """Validate one landed period, or every landed period not yet decided."""
    validator = Validator(params, storage, suites)
    dates = [date] if date is not None else storage.partition_dates("landing", INTERACTIONS)
    results = []
    for d in dates:
        r = validator.validate_period(d, force=force)
        if r.status != "unchanged":
            log.info("%s %s (%d rows)", d, r.status, r.rows)
        results.append(r)
    return results
