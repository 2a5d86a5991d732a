"""Reading the features folder into what models train and are evaluated on.

Evaluation protocol (shared by training's early stopping, ``recops evaluate``, the gate
and monitoring): for a held-out window (``val`` or ``test``), every user with events in
the window is a test case.

- history = the user's events before the window (train, plus val when the window is
  test), in time order;
- targets = the user's items in the window, ranked against the full catalog with the
  history excluded.

A user who is new in the window (no earlier event) is folded in: the first half of
their window events (chronologically) becomes the history and the rest the targets,
so people who arrive during the window are evaluated too, without leaking the future.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

Window = Literal["val", "test"]


@dataclass(frozen=True)
class HeldOut:
    """Test cases of one window: parallel arrays, one entry per user."""

    user_idx: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_idx)


@dataclass(frozen=True)
class FeatureData:
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    meta: dict

    @classmethod
    def load(cls, folder: str | Path) -> FeatureData:
        folder = Path(folder)
        if not (folder / "interactions.parquet").exists():
            raise FileNotFoundError(f"no features in {folder}; run `recops features` (or `dvc repro features`) first")
        return cls(
            interactions=pd.read_parquet(folder / "interactions.parquet"),
            users=pd.read_parquet(folder / "users.parquet"),
            items=pd.read_parquet(folder / "items.parquet"),
            meta=json.loads((folder / "meta.json").read_text()),
        )

    @property
    def n_users(self) -> int:
        return int(self.meta["n_users"])

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @cached_property
    def train(self) -> pd.DataFrame:
        return self.interactions[self.interactions["split"] == "train"]

    def sequences(self, splits: tuple[str, ...] = ("train",)) -> list[np.ndarray]:
        """Chronological item indices per user index (empty for users without events)."""
        df = self.interactions[self.interactions["split"].isin(splits)]
        out = [np.empty(0, dtype=np.int64) for _ in range(self.n_users)]
        for u, g in df.groupby("user_idx", sort=False):
            out[int(u)] = g["item_idx"].to_numpy(dtype=np.int64)
        return out

    def item_features(self) -> dict[str, torch.Tensor]:
        """Genre multi-hot, normalised year and train popularity, indexed by item_idx."""
        genres = self.meta.get("genres", [])
        col = {g: i for i, g in enumerate(genres)}
        multi_hot = torch.zeros(self.n_items, max(1, len(genres)))
        items = self.items.set_index("item_idx").reindex(range(self.n_items))
        for idx, gs in enumerate(items["genres"]):
            for g in gs if isinstance(gs, list | np.ndarray) else []:
                multi_hot[idx, col[g]] = 1.0
        year = items["year"].fillna(0).to_numpy(dtype=np.float32)
        known = year > 0
        norm = np.zeros_like(year)
        if known.any():
            mu, sd = year[known].mean(), year[known].std() or 1.0
            norm[known] = (year[known] - mu) / sd
        popularity = np.bincount(self.train["item_idx"].to_numpy(), minlength=self.n_items).astype(np.float32)
        return {
            "genre_multi_hot": multi_hot,
            "year": torch.from_numpy(norm),
            "popularity": torch.from_numpy(popularity),
        }

    def held_out(self, window: Window) -> HeldOut:
        """Test cases for ``window`` following the protocol in the module docstring."""
        before = ("train",) if window == "val" else ("train", "val")
        df = self.interactions
        past = df[df["split"].isin(before)]
        now = df[df["split"] == window]
        past_by_user = {int(u): g["item_idx"].to_numpy(dtype=np.int64) for u, g in past.groupby("user_idx", sort=False)}
        users, histories, targets = [], [], []
        for u, g in now.groupby("user_idx", sort=True):
            items = g["item_idx"].to_numpy(dtype=np.int64)  # already in time order
            hist = past_by_user.get(int(u))
            if hist is None or len(hist) == 0:
                if len(items) < 2:
                    continue
                cut = len(items) // 2
                hist, items = items[:cut], items[cut:]
            tgt = np.setdiff1d(np.unique(items), hist)  # re-watched items are not something to discover
            if len(tgt) == 0:
                continue
            users.append(int(u))
            histories.append(hist)
            targets.append(tgt)
        return HeldOut(np.asarray(users, dtype=np.int64), histories, targets)
