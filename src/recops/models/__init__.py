"""Model registry, common interface and checkpointing.

Every model is an ``nn.Module`` built as ``Model(config, n_users, n_items, item_features)`` and exposes::

    trainable: bool                     # False for popularity (closed-form ``fit``)
    max_history_len: int                # how many recent items the model looks at
    encode_users(user_idx[B], histories[B, L]) -> [B, d]
    encode_histories(histories[B, L]) -> [B, d]        # anonymous sessions
    item_embeddings() -> [n_items, d]
    score_users(user_idx, histories) / score_histories(histories) -> [B, n_items]
        (== encode_* @ item_embeddings().T)
    loss(batch) -> (loss, logs: dict[str, float])      # batch from recops.models.batching

Histories are left-padded with ``batching.PAD`` (-1); see ``batching.pad_histories``.

Checkpoints hold only tensors and plain Python, so ``torch.load(path, weights_only=True)`` works::

    torch.save(checkpoint_payload(model, config, extra={"epoch": 3}), path)
    model = load_model(torch.load(path, weights_only=True))
"""

from __future__ import annotations

from typing import Any

# Configs are plain pydantic and import eagerly; everything that needs torch is loaded on
# first use, so reading params.yaml (recops.config) never imports torch.
from recops.models.config import (
    ModelConfig,
    PopularityConfig,
    SASRecConfig,
    TaskWeights,
    TwoTowerConfig,
    parse_model_config,
)

_LAZY = {
    "CHECKPOINT_FORMAT_VERSION": "recops.models.core",
    "MODEL_REGISTRY": "recops.models.core",
    "Recommender": "recops.models.core",
    "build_model": "recops.models.core",
    "checkpoint_payload": "recops.models.core",
    "load_model": "recops.models.core",
    "PopularityModel": "recops.models.popularity",
    "SASRecModel": "recops.models.sasrec",
    "TwoTowerModel": "recops.models.two_tower",
}

__all__ = [*_LAZY, "ModelConfig", "PopularityConfig", "SASRecConfig", "TaskWeights", "TwoTowerConfig",
           "parse_model_config"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recops.models' has no attribute {name!r}")
