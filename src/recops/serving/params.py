"""``serving:`` in params.yaml: the HTTP server, hot reload and the serving check before promotion.

Plain pydantic only (no FastAPI, no torch), so reading params.yaml stays cheap.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ServingCheckParams", "ServingParams"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServingCheckParams(_Frozen):
    """What a challenger must answer, and how fast, before ``recops promote`` accepts it."""

    users: int = Field(default=50, ge=1, description="Known users asked for recommendations (sampled from the model).")
    sessions: int = Field(default=20, ge=0, description="Anonymous sessions (recent items of sampled users).")
    similar_items: int = Field(default=20, ge=0, description="Items asked for similar items.")
    unknown_users: int = Field(default=2, ge=0, description="Ids the model has never seen: must get the fallback.")
    k: int = Field(default=10, ge=1, description="List length asked for.")
    warmup_rounds: int = Field(default=1, ge=0, description="Times the smoke set is sent first, unmeasured.")
    rounds: int = Field(default=2, ge=1, description="Times the smoke set is then sent and timed (figures pool them).")
    p99_budget_ms: float = Field(default=20.0, gt=0, description="p99 latency the challenger must stay within.")
    seed: int = 0


class ServingParams(_Frozen):
    """``recops serve``: where it listens, how often it polls the champion alias, and request bounds."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    model_alias: str = Field(default="champion", min_length=1, description="Alias of registry.production_model served.")
    poll_seconds: float = Field(default=30.0, gt=0, description="How often the alias is looked up for a new version.")
    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=100, ge=1, description="Largest k a request may ask for (larger: HTTP 422).")
    max_session_items: int = Field(default=200, ge=1, description="Most item ids one anonymous session may post.")
    max_id_length: int = Field(default=128, ge=1, description="Longest user / item id accepted.")
    torch_threads: int = Field(default=1, ge=1, description="torch intra-op threads of the server process.")
    check: ServingCheckParams = ServingCheckParams()

    @model_validator(mode="after")
    def _k_bounds(self) -> ServingParams:
        if self.default_k > self.max_k:
            raise ValueError(f"serving.default_k ({self.default_k}) must not exceed serving.max_k ({self.max_k})")
        if self.check.k > self.max_k:
            raise ValueError(f"serving.check.k ({self.check.k}) must not exceed serving.max_k ({self.max_k})")
        return self
