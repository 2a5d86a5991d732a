"""Typed configuration: ``params.yaml`` loaded into frozen pydantic models.

``params.yaml`` is the one source of tunables. Every section is a frozen model with
``extra="forbid"`` so a misspelt or unknown key fails loudly with its dotted path.
Endpoints and credentials never live here: they come from the environment (see
:class:`Env`).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recops.models.config import PopularityConfig, SASRecConfig, TwoTowerConfig
from recops.monitor import MonitorParams
from recops.serving.params import ServingParams

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """Raised when params.yaml is missing, unreadable or invalid."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- storage
class StorageParams(_Frozen):
    """Where the lake lives. ``root`` is a local directory or ``s3://bucket/prefix``.

    ``RECOPS_STORAGE_URL`` overrides ``root`` so the same params run locally and on S3.
    """

    root: str = "data/lake"


# --------------------------------------------------------------------------- source
class MovieLensParams(_Frozen):
    dataset: str = "ml-latest-small"
    base_url: str = "https://files.grouplens.org/datasets/movielens"
    checksum: str | None = Field(
        default=None,
        description="Pinned digest 'sha256:<hex>' or 'md5:<hex>'; when unset the official .md5 sidecar is checked.",
        pattern=r"^(sha256|md5):[0-9a-fA-F]+$",
    )


class ColumnMapping(_Frozen):
    user_id: str = "user_id"
    item_id: str = "item_id"
    rating: str | None = "rating"
    timestamp: str = "timestamp"


class CatalogColumnMapping(_Frozen):
    item_id: str = "item_id"
    title: str = "title"
    genres: str | None = "genres"


class EventLogParams(_Frozen):
    path: str | None = None
    format: Literal["csv", "parquet"] = "csv"
    columns: ColumnMapping = ColumnMapping()
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso"] = "s"
    default_rating: float = 1.0
    catalog_path: str | None = None
    catalog_format: Literal["csv", "parquet"] = "csv"
    catalog_columns: CatalogColumnMapping = CatalogColumnMapping()


class SourceParams(_Frozen):
    kind: Literal["movielens", "event_log"] = "movielens"
    cache_dir: str = "data/cache"
    movielens: MovieLensParams = MovieLensParams()
    event_log: EventLogParams = EventLogParams()

    @model_validator(mode="after")
    def _event_log_needs_path(self) -> SourceParams:
        if self.kind == "event_log" and not self.event_log.path:
            raise ValueError("source.event_log.path must be set when source.kind is 'event_log'")
        return self


# --------------------------------------------------------------------------- calendar
class PeriodParams(_Frozen):
    days: int = Field(default=1, ge=1, le=366, description="Length of one period in days.")


class ReplayParams(_Frozen):
    """Replay a historical log onto a simulated calendar.

    ``equal_count`` cuts the log into ``periods`` slices of (nearly) equal size;
    ``real_time`` scales the log's own timeline linearly onto ``periods`` periods.
    """

    enabled: bool = True
    start_date: dt.date = dt.date(2024, 1, 1)
    periods: int = Field(default=120, ge=1)
    mode: Literal["equal_count", "real_time"] = "equal_count"


class IngestParams(_Frozen):
    until: dt.date | None = Field(
        default=None, description="Last period to land when no --date is given; null = every period."
    )


# --------------------------------------------------------------------------- validation
class VolumeParams(_Frozen):
    trailing_periods: int = Field(default=7, ge=1)
    min_ratio: float = Field(default=0.2, ge=0)
    max_ratio: float = Field(default=5.0, gt=0)
    min_rows: int = Field(default=1, ge=0)
    max_rows: int = Field(default=10_000_000, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> VolumeParams:
        if self.min_ratio >= self.max_ratio:
            raise ValueError("validation.volume.min_ratio must be below max_ratio")
        return self


class ValidationParams(_Frozen):
    rating_min: float = 0.5
    rating_max: float = 5.0
    max_unknown_item_share: float = Field(default=0.01, ge=0, le=1)
    volume: VolumeParams = VolumeParams()

    @model_validator(mode="after")
    def _ordered(self) -> ValidationParams:
        if self.rating_min > self.rating_max:
            raise ValueError("validation.rating_min must not exceed rating_max")
        return self


# --------------------------------------------------------------------------- features
class KCoreParams(_Frozen):
    user: int = Field(default=5, ge=1)
    item: int = Field(default=5, ge=1)


class SplitParams(_Frozen):
    method: Literal["global_time", "leave_last_out"] = "global_time"
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5)


class FeatureParams(_Frozen):
    implicit_threshold: float = Field(default=3.5, description="Ratings at or above this are positives.")
    kcore: KCoreParams = KCoreParams()
    split: SplitParams = SplitParams()
    output_dir: str = "data/features"


# --------------------------------------------------------------------------- models
class ModelParams(_Frozen):
    """Which model to train, and the settings of each kind (kept side by side)."""

    kind: Literal["popularity", "two_tower", "sasrec"] = "two_tower"
    popularity: PopularityConfig = PopularityConfig()
    two_tower: TwoTowerConfig = TwoTowerConfig()
    sasrec: SASRecConfig = SASRecConfig()

    def selected(self) -> PopularityConfig | TwoTowerConfig | SASRecConfig:
        return getattr(self, self.kind)


class TrainParams(_Frozen):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    patience: int = Field(default=3, ge=1, description="Epochs without validation NDCG@10 gain before stopping.")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(default=True, description="bf16 autocast on CUDA (ignored on CPU).")
    out_dir: str = "data/model"
    checkpoint_dir: str = "data/checkpoints"


class SliceParams(_Frozen):
    few_interactions_max: int = Field(default=5, ge=1, description="Users with at most this many history items.")
    long_tail_share: float = Field(
        default=0.8, gt=0, lt=1, description="Items outside the most popular ones that make up 1 - share of train interactions."
    )


class EvaluationParams(_Frozen):
    ks: list[int] = Field(default=[5, 10, 20], min_length=1)
    batch_size: int = Field(default=1024, ge=1)
    slices: SliceParams = SliceParams()

    @model_validator(mode="after")
    def _positive_ks(self) -> EvaluationParams:
        if any(k < 1 for k in self.ks):
            raise ValueError("evaluation.ks must be positive integers")
        return self


class ChampionComparison(_Frozen):
    metric: str = "ndcg@10"
    margin: float = Field(default=0.0, ge=0, description="Allowed drop below the champion (absolute).")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    n_bootstrap: int = Field(default=1000, ge=100)
    seed: int = 0


class GateParams(_Frozen):
    floors: dict[str, float] = Field(default_factory=lambda: {"ndcg@10": 0.01, "recall@20": 0.02})
    champion: ChampionComparison = ChampionComparison()
    allow_bootstrap: bool = Field(default=True, description="With no champion yet, a candidate clearing the floors becomes champion.")


class RegistryParams(_Frozen):
    experiment: str = "recops"
    candidates_model: str = "recops-candidates"
    production_model: str = "recops"


class Params(_Frozen):
    storage: StorageParams = StorageParams()
    source: SourceParams = SourceParams()
    period: PeriodParams = PeriodParams()
    replay: ReplayParams = ReplayParams()
    ingest: IngestParams = IngestParams()
    validation: ValidationParams = ValidationParams()
    features: FeatureParams = FeatureParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluation: EvaluationParams = EvaluationParams()
    gate: GateParams = GateParams()
    registry: RegistryParams = RegistryParams()
    monitor: MonitorParams = MonitorParams()
    serving: ServingParams = ServingParams()


# --------------------------------------------------------------------------- env
class Env(_Frozen):
    """Endpoints and secrets: read from the environment only, never from params.yaml."""

    storage_url: str | None = None
    data_mirror: str | None = None
    s3_endpoint_url: str | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Env:
        e = os.environ if environ is None else environ
        return cls(
            storage_url=e.get("RECOPS_STORAGE_URL") or None,
            data_mirror=e.get("RECOPS_DATA_MIRROR") or None,
            s3_endpoint_url=e.get("RECOPS_S3_ENDPOINT_URL") or e.get("AWS_ENDPOINT_URL") or None,
        )


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid setting(s)"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a recops setting)"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_params(data: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a raw mapping; errors name every offending key by its dotted path."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> Params:
    """Load and validate params.yaml (``RECOPS_PARAMS`` overrides the default path)."""
    p = Path(os.environ.get("RECOPS_PARAMS", path)) if path == DEFAULT_PARAMS else Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: params file not found (run from the project root or set RECOPS_PARAMS)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return parse_params(data, str(p))


def with_overrides(params: Params, overrides: list[str], source: str = "--set") -> Params:
    """``params`` with ``dotted.key=value`` overrides applied (values parsed as YAML), validated again:
    an unknown key or a bad value fails with a message naming it."""
    data = params.model_dump(mode="json")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source} {item!r}: value is not valid YAML: {err}") from None
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"{source} {item!r}: {'.'.join(parts[:i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return parse_params(data, source)

