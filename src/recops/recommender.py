"""Pure inference over a trained ``model.pt``: top-K for known users, anonymous sessions and similar items.

``model.pt`` is ``recops.models.checkpoint_payload(model, config, extra)`` where ``extra`` holds the id
maps and train histories (see :class:`Recommender`). Nothing here knows about MLflow; the registry's pyfunc
wrapper (``recops.registry.RecopsPyfunc``) is a thin adapter over this class.

Conventions:

* Item embeddings are computed once at load time (eval mode) and reused for every request, so a request
  costs one user/session encoding + one matrix product + ``torch.topk``.
* Known users are encoded from their stored chronological train history (the model looks at the last
  ``max_history_len`` items) and their user index; by default every item of that history is excluded.
* Unknown users, sessions with no known item and known users with an empty history get the train
  popularity ranking with ``fallback=True``.
* ``k`` is clipped to the catalog size; a list is shorter than ``k`` only when exclusions leave fewer items.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recops.metrics import topk_full_ranking
from recops.models import load_model
from recops.models.batching import PAD, pad_histories

log = logging.getLogger(__name__)

__all__ = ["Recommendation", "Recommender"]


@dataclass(frozen=True)
class Recommendation:
    """One ranked list: ``item_ids[i]`` has score ``scores[i]`` (descending). ``fallback`` is True when the
    list is the popularity ranking because the model had nothing to go on (unknown user / no known item)."""

    item_ids: list[str]
    scores: list[float]
    fallback: bool


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


class Recommender:
    """Inference wrapper around a ``recops.models`` checkpoint payload.

    Attributes: ``kind`` (model kind), ``n_items``, ``n_users``, ``user_ids`` / ``item_ids`` (external ids
    by index), ``max_history_len``, ``metadata`` (``best_epoch``, ``val_metrics``, ``feature_meta``) and
    ``version`` (free metadata, e.g. the registry version serving the requests; ``None`` by default).
    """

    def __init__(self, model: torch.nn.Module, *, kind: str, user_ids: Sequence[str], item_ids: Sequence[str],
                 user_histories: Sequence[Sequence[int]], popularity: torch.Tensor | None = None,
                 metadata: Mapping[str, Any] | None = None, batch_size: int = 1024) -> None:
        self.model = model.eval()
        self.kind = kind
        self.n_items = int(model.n_items)
        self.n_users = int(model.n_users)
        self.max_history_len = int(model.max_history_len)
        self.batch_size = batch_size
        self.version: str | None = None
        self.metadata: dict[str, Any] = dict(metadata or {})

        self.user_ids = [str(u) for u in user_ids]
        self.item_ids = [str(i) for i in item_ids]
        if len(self.item_ids) != self.n_items:
            raise ValueError(f"{len(self.item_ids)} item ids for a model with n_items={self.n_items}")
        if len(user_histories) != len(self.user_ids):
            raise ValueError(f"{len(user_histories)} user histories for {len(self.user_ids)} user ids")
        if len(self.user_ids) > self.n_users:
            raise ValueError(f"{len(self.user_ids)} user ids for a model with n_users={self.n_users}")
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._item_index = {it: i for i, it in enumerate(self.item_ids)}
        if len(self._user_index) != len(self.user_ids) or len(self._item_index) != len(self.item_ids):
            raise ValueError("user_ids and item_ids must be unique")
        self._histories = [np.asarray(_as_list(h), dtype=np.int64).reshape(-1) for h in user_histories]
        for u, h in enumerate(self._histories):
            if h.size and (h.min() < 0 or h.max() >= self.n_items):
                raise ValueError(f"history of user {self.user_ids[u]!r} holds item indices outside [0, {self.n_items})")

        self.device = next(itertools.chain(model.parameters(), model.buffers()), torch.zeros(0)).device
        with torch.no_grad():
            self._item_emb = model.item_embeddings().detach().to(torch.float32).contiguous()
            self._item_emb_unit = F.normalize(self._item_emb, dim=1)
        if popularity is None:
            popularity = model.item_features.get("popularity") if hasattr(model, "item_features") else None
        pop = torch.zeros(self.n_items) if popularity is None else torch.as_tensor(popularity).to(torch.float32)
        if pop.shape != (self.n_items,):
            raise ValueError(f"popularity has shape {tuple(pop.shape)}; expected ({self.n_items},)")
        # stable descending order: ties broken by item index, so the fallback list is deterministic
        order = np.argsort(-pop.numpy(), kind="stable")
        self._pop_order = torch.from_numpy(order.copy())
        self._pop_scores = pop[self._pop_order]

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], *, device: torch.device | str = "cpu",
                     batch_size: int = 1024) -> Recommender:
        """Build from ``checkpoint_payload(model, config, extra)`` (see the module docstring for ``extra``)."""
        extra = payload.get("extra") or {}
        missing = [key for key in ("user_ids", "item_ids", "user_histories") if key not in extra]
        if missing:
            raise ValueError(f"checkpoint extra lacks {missing}: not a recops model.pt written by train")
        model = load_model(payload, map_location=device)
        rec = cls(
            model,
            kind=str(payload["kind"]),
            user_ids=extra["user_ids"],
            item_ids=extra["item_ids"],
            user_histories=extra["user_histories"],
            popularity=extra.get("popularity"),
            metadata={k: extra[k] for k in ("best_epoch", "val_metrics", "feature_meta") if k in extra},
            batch_size=batch_size,
        )
        stored = extra.get("item_embeddings")
        if isinstance(stored, torch.Tensor) and (
            stored.shape != rec._item_emb.shape
            or not torch.allclose(stored.to(rec._item_emb), rec._item_emb, atol=1e-4, rtol=1e-3)
        ):
            log.warning("item_embeddings stored in the checkpoint differ from the model's; using the model's")
        return rec

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
             batch_size: int = 1024) -> Recommender:
        """Load ``model.pt`` (``torch.load(weights_only=True)``: no code is executed from the file)."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return cls.from_payload(payload, device=device, batch_size=batch_size)

    def __repr__(self) -> str:
        return (f"Recommender(kind={self.kind!r}, n_users={len(self.user_ids)}, n_items={self.n_items}, "
                f"version={self.version!r})")

    # ------------------------------------------------------------------ lookups

    def has_user(self, user_id: str) -> bool:
        return str(user_id) in self._user_index

    def has_item(self, item_id: str) -> bool:
        return str(item_id) in self._item_index

    def history(self, user_id: str) -> list[str]:
        """The stored chronological train history of a known user (KeyError when unknown)."""
        u = self._user_index.get(str(user_id))
        if u is None:
            raise KeyError(f"unknown user id {user_id!r}")
        return [self.item_ids[i] for i in self._histories[u]]

    def _bounded_k(self, k: int) -> int:
        k = int(k)
        if k < 1:
            raise ValueError(f"k={k} must be >= 1")
        return min(k, self.n_items)

    # ------------------------------------------------------------------ ranking helpers

    def _popular(self, k: int) -> Recommendation:
        return Recommendation(
            item_ids=[self.item_ids[i] for i in self._pop_order[:k].tolist()],
            scores=self._pop_scores[:k].tolist(),
            fallback=True,
        )

    def _to_recommendations(self, top_idx: torch.Tensor, top_scores: torch.Tensor) -> list[Recommendation]:
        out = []
        for idx_row, score_row in zip(top_idx.tolist(), top_scores.tolist(), strict=True):
            keep = [j for j, i in enumerate(idx_row) if i != PAD]
            out.append(Recommendation(item_ids=[self.item_ids[idx_row[j]] for j in keep],
                                      scores=[float(score_row[j]) for j in keep], fallback=False))
        return out

    def _rank(self, histories: list[np.ndarray], user_idx: np.ndarray | None, k: int,
              exclude_seen: bool) -> list[Recommendation]:
        """Model top-k for non-empty histories (user_idx None = anonymous), batched by similar length."""
        results: list[Recommendation | None] = [None] * len(histories)
        lengths = np.array([min(len(h), self.max_history_len) for h in histories], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            hists = [histories[i] for i in chunk]
            width = max(1, int(lengths[chunk].max()))
            hist_tensor = pad_histories(hists, width).to(self.device)
            if user_idx is None:
                query = self.model.encode_histories(hist_tensor)
            else:
                query = self.model.encode_users(torch.from_numpy(user_idx[chunk]).to(self.device), hist_tensor)
            scores = query.to(torch.float32) @ self._item_emb.T
            top_idx, top_scores = topk_full_ranking(scores, hists if exclude_seen else None, k, inplace=True)
            for i, rec in zip(chunk.tolist(), self._to_recommendations(top_idx.cpu(), top_scores.cpu()), strict=True):
                results[i] = rec
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def recommend_users(self, user_ids: Sequence[str], k: int, exclude_seen: bool = True) -> list[Recommendation]:
        """Top-``k`` per user id, in input order. Known users: model ranking from their stored history
        (seen items excluded unless ``exclude_seen=False``). Unknown users: popularity, ``fallback=True``."""
        k = self._bounded_k(k)
        results: list[Recommendation | None] = [None] * len(user_ids)
        rows, users = [], []
        for row, user_id in enumerate(user_ids):
            u = self._user_index.get(str(user_id))
            if u is None or self._histories[u].size == 0:
                results[row] = self._popular(k)
            else:
                rows.append(row)
                users.append(u)
        if rows:
            user_arr = np.asarray(users, dtype=np.int64)
            ranked = self._rank([self._histories[u] for u in users], user_arr, k, exclude_seen)
            for row, rec in zip(rows, ranked, strict=True):
                results[row] = rec
        return results  # type: ignore[return-value]

    def recommend_user(self, user_id: str, k: int, exclude_seen: bool = True) -> Recommendation:
        return self.recommend_users([user_id], k, exclude_seen)[0]

    @torch.no_grad()
    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int,
                            exclude_seen: bool = True) -> list[Recommendation]:
        """Top-``k`` for anonymous sessions (chronological item ids each). Unknown item ids are ignored; a
        session with no known item gets popularity with ``fallback=True``."""
        k = self._bounded_k(k)
        results: list[Recommendation | None] = [None] * len(histories)
        rows, known = [], []
        for row, items in enumerate(histories):
            idx = [self._item_index[i] for i in (str(x) for x in items) if i in self._item_index]
            if idx:
                rows.append(row)
                known.append(np.asarray(idx, dtype=np.int64))
            else:
                results[row] = self._popular(k)
        if rows:
            for row, rec in zip(rows, self._rank(known, None, k, exclude_seen), strict=True):
                results[row] = rec
        return results  # type: ignore[return-value]

    def recommend_history(self, item_ids: Sequence[str], k: int, exclude_seen: bool = True) -> Recommendation:
        """Top-``k`` for one anonymous session (see :meth:`recommend_histories`)."""
        return self.recommend_histories([item_ids], k, exclude_seen)[0]

    @torch.no_grad()
    def recommend_with_histories(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]], k: int,
                                 exclude_seen: bool = True) -> list[Recommendation]:
        """Top-``k`` per user from an up-to-date history (chronological item ids), e.g. everything the user
        did up to now rather than the history stored at training time. Known users are scored with their
        user embedding and this history; unknown users as anonymous sessions; a user with no known item
        gets popularity (``fallback=True``)."""
        if len(user_ids) != len(histories):
            raise ValueError(f"{len(user_ids)} user ids for {len(histories)} histories")
        k = self._bounded_k(k)
        results: list[Recommendation | None] = [None] * len(user_ids)
        known_rows, known_users, known_hists, anon_rows, anon_hists = [], [], [], [], []
        for row, (user_id, items) in enumerate(zip(user_ids, histories, strict=True)):
            idx = np.asarray([self._item_index[i] for i in (str(x) for x in items) if i in self._item_index],
                             dtype=np.int64)
            u = self._user_index.get(str(user_id))
            if idx.size == 0:
                results[row] = self._popular(k)
            elif u is None:
                anon_rows.append(row)
                anon_hists.append(idx)
            else:
                known_rows.append(row)
                known_users.append(u)
                known_hists.append(idx)
        if known_rows:
            ranked = self._rank(known_hists, np.asarray(known_users, dtype=np.int64), k, exclude_seen)
            for row, rec in zip(known_rows, ranked, strict=True):
                results[row] = rec
        if anon_rows:
            for row, rec in zip(anon_rows, self._rank(anon_hists, None, k, exclude_seen), strict=True):
                results[row] = rec
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def similar_items(self, item_id: str, k: int) -> Recommendation:
        """Top-``k`` items by cosine similarity of the item embeddings, the item itself excluded.

        The popularity model has 1-d "embeddings" (its scores), for which cosine is meaningless: it returns
        the popularity ranking without the item and ``fallback=True``. Unknown item -> ``KeyError``.
        """
        idx = self._item_index.get(str(item_id))
        if idx is None:
            raise KeyError(f"unknown item id {item_id!r}: not in the model's catalog of {self.n_items} items")
        if self.n_items < 2:
            return Recommendation(item_ids=[], scores=[], fallback=self.kind == "popularity")
        k = min(self._bounded_k(k), self.n_items - 1)
        if self.kind == "popularity":
            keep = self._pop_order != idx
            order, scores = self._pop_order[keep][:k], self._pop_scores[keep][:k]
            return Recommendation(item_ids=[self.item_ids[i] for i in order.tolist()], scores=scores.tolist(),
                                  fallback=True)
        sims = (self._item_emb_unit[idx] @ self._item_emb_unit.T).unsqueeze(0)
        top_idx, top_scores = topk_full_ranking(sims, [[idx]], k, inplace=True)
        return self._to_recommendations(top_idx.cpu(), top_scores.cpu())[0]
