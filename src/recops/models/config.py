"""Model hyper-parameters.

Every model is described by one frozen pydantic config; ``kind`` is the discriminator so that
``ModelConfig`` can be parsed straight from ``params.yaml`` / a checkpoint::

    cfg = parse_model_config({"kind": "sasrec", "dim": 64})

Configs are immutable and reject unknown keys, so a typo in params.yaml fails loudly instead of
silently training with a default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PopularityConfig(_Frozen):
    """Most-popular baseline.

    ``half_life_days=None`` ranks by plain train interaction counts. Otherwise every interaction is
    weighted by ``0.5 ** (age_days / half_life_days)`` where the age is measured relative to the latest
    train timestamp (so the newest interaction weighs 1).
    """

    kind: Literal["popularity"] = "popularity"
    half_life_days: float | None = Field(default=None, gt=0)


class TaskWeights(_Frozen):
    """Weights of the two-tower training tasks in the total loss."""

    retrieval: float = Field(default=1.0, ge=0)
    item_item: float = Field(default=0.5, ge=0)


class TwoTowerConfig(_Frozen):
    """Multi-task two-tower retrieval model (user->item and item->item share the item tower)."""

    kind: Literal["two_tower"] = "two_tower"
    dim: int = Field(default=64, gt=0)
    history_len: int = Field(default=50, gt=0)
    user_id_embedding: bool = True
    temperature: float = Field(default=0.05, gt=0)
    logq_correction: bool = True
    extra_negatives: int = Field(default=0, ge=0)
    task_weights: TaskWeights = TaskWeights()
    item_item_window: int = Field(default=5, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _some_task_enabled(self) -> TwoTowerConfig:
        if self.task_weights.retrieval == 0 and self.task_weights.item_item == 0:
            raise ValueError("at least one task weight must be > 0")
        return self


class SASRecConfig(_Frozen):
    """Self-attentive sequential recommender (Kang & McAuley, 2018).

    ``loss="full_ce"`` is the SASRec+CE setting (softmax over the whole catalog at every position);
    ``loss="sampled_softmax"`` uses ``n_negatives`` uniform negatives shared across the batch.
    """

    kind: Literal["sasrec"] = "sasrec"
    dim: int = Field(default=64, gt=0)
    max_len: int = Field(default=200, gt=0)
    n_layers: int = Field(default=2, ge=1)
    n_heads: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    loss: Literal["full_ce", "sampled_softmax"] = "full_ce"
    n_negatives: int = Field(default=256, gt=0)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.n_heads != 0:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        return self


ModelConfig = Annotated[PopularityConfig | TwoTowerConfig | SASRecConfig, Field(discriminator="kind")]

_MODEL_CONFIG_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelConfig)


def parse_model_config(data: dict[str, Any] | PopularityConfig | TwoTowerConfig | SASRecConfig) -> ModelConfig:
    """Validate a plain dict (e.g. from params.yaml or ``config.model_dump()``) into a model config."""
    if isinstance(data, PopularityConfig | TwoTowerConfig | SASRecConfig):
        return data
    return _MODEL_CONFIG_ADAPTER.validate_python(data)
