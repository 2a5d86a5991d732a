"""Most-popular baseline, optionally recency-weighted.

There is nothing to train by gradient descent: ``trainable = False`` and ``fit(item_idx, timestamps)``
computes the scores in closed form. With ``half_life_days=None`` the model is ready right after
construction (scores = ``item_features["popularity"]`` train counts); with a half-life you must call
``fit`` because the timestamps are needed.

To keep evaluation uniform it is written as a rank-1 dot-product model: ``encode_*`` returns a vector of
ones ``[B, 1]`` and ``item_embeddings()`` returns the scores as ``[n_items, 1]``, so
``encode_users(...) @ item_embeddings().T`` is the (non-personalised) score matrix like for every model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from recops.models.batching import Batch, check_item_features
from recops.models.config import PopularityConfig

SECONDS_PER_DAY = 86_400.0


def recency_weights(timestamps: np.ndarray, half_life_days: float) -> np.ndarray:
    """``0.5 ** (age / half_life)`` with age measured from the latest timestamp (unix seconds or datetime64)."""
    ts = np.asarray(timestamps)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ns]").astype(np.int64) / 1e9
    ts = ts.astype(np.float64)
    age_days = (ts.max() - ts) / SECONDS_PER_DAY
    return np.exp2(-age_days / half_life_days)


class PopularityModel(nn.Module):
    trainable = False

    def __init__(self, config: PopularityConfig, n_users: int, n_items: int,
                 item_features: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.item_features = check_item_features(item_features, n_items)
        self.max_history_len = 1  # histories are ignored
        self.register_buffer("scores", torch.zeros(n_items))
        self.register_buffer("fitted", torch.tensor(False))
        if config.half_life_days is None and "popularity" in self.item_features:
            self.scores.copy_(self.item_features["popularity"])
            self.fitted.fill_(True)

    def fit(self, item_idx: np.ndarray | torch.Tensor, timestamps: np.ndarray | None = None) -> PopularityModel:
        """Compute scores from the train interactions (one entry per interaction)."""
        items = np.asarray(item_idx, dtype=np.int64)
        weights = None
        if self.config.half_life_days is not None:
            if timestamps is None:
                raise ValueError("half_life_days is set: fit() needs the interaction timestamps")
            weights = recency_weights(np.asarray(timestamps), self.config.half_life_days)
        counts = np.bincount(items, weights=weights, minlength=self.n_items)[: self.n_items]
        self.scores.copy_(torch.from_numpy(counts.astype(np.float32)))
        self.fitted.fill_(True)
        return self

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("PopularityModel is not fitted; call fit(item_idx, timestamps) first")

    def item_embeddings(self) -> torch.Tensor:
        self._check_fitted()
        return self.scores[:, None]

    def encode_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return torch.ones(histories.shape[0], 1, device=self.scores.device)

    def encode_users(self, user_idx: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_histories(histories)

    def score_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_histories(histories) @ self.item_embeddings().T

    def score_users(self, user_idx: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return self.score_histories(histories)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise TypeError("PopularityModel has no loss: it is fitted in closed form with fit()")
