"""Model registry, common interface and checkpointing (see ``recops.models``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from recops.models.batching import Batch
from recops.models.config import ModelConfig, parse_model_config
from recops.models.popularity import PopularityModel
from recops.models.sasrec import SASRecModel
from recops.models.two_tower import TwoTowerModel

CHECKPOINT_FORMAT_VERSION = 1

MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "popularity": PopularityModel,
    "two_tower": TwoTowerModel,
    "sasrec": SASRecModel,
}


@runtime_checkable
class Recommender(Protocol):
    trainable: bool
    max_history_len: int
    n_users: int
    n_items: int

    def encode_users(self, user_idx: torch.Tensor | None, histories: torch.Tensor) -> torch.Tensor: ...
    def encode_histories(self, histories: torch.Tensor) -> torch.Tensor: ...
    def item_embeddings(self) -> torch.Tensor: ...
    def score_users(self, user_idx: torch.Tensor, histories: torch.Tensor) -> torch.Tensor: ...
    def score_histories(self, histories: torch.Tensor) -> torch.Tensor: ...
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]: ...


def build_model(config: ModelConfig | dict[str, Any], n_users: int, n_items: int,
                item_features: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Instantiate the model for ``config.kind`` (a config object or its ``model_dump()`` dict)."""
    config = parse_model_config(config)
    return MODEL_REGISTRY[config.kind](config, n_users, n_items, item_features)


def _plain(value: Any, where: str = "extra") -> Any:
    """Copy of ``value`` that ``torch.load(weights_only=True)`` can read back: numpy scalars/arrays become
    Python numbers/tensors; anything that is not a tensor or plain Python raises ``TypeError``."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if type(value) in (bool, int, float, str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(type(k) in (str, int) for k in value):
            raise TypeError(f"{where}: dict keys must be str or int")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{where} holds {type(value).__name__}; only tensors and plain Python are allowed")


def checkpoint_payload(model: nn.Module, config: ModelConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to rebuild ``model``, as tensors / plain Python (CPU).

    Keys: ``format_version`` (int), ``kind`` (str), ``config`` (``config.model_dump()``), ``n_users``,
    ``n_items`` (int), ``item_features`` (dict[str, Tensor]), ``state_dict`` (dict[str, Tensor]),
    ``extra`` (your metadata, e.g. epoch / metrics / data version; plain Python, tensors, numpy values are
    converted).
    """
    extra = _plain(dict(extra or {}))
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": config.kind,
        "config": config.model_dump(),
        "n_users": int(model.n_users),
        "n_items": int(model.n_items),
        "item_features": {k: v.detach().cpu() for k, v in model.item_features.items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }


def load_model(payload: Mapping[str, Any], map_location: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a model from ``checkpoint_payload`` output (e.g. ``torch.load(path, weights_only=True)``).
    The model is returned in eval mode."""
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint format_version={version!r}")
    model = build_model(payload["config"], payload["n_users"], payload["n_items"], payload["item_features"])
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(map_location).eval()
