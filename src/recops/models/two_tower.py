"""Multi-task two-tower retrieval model.

Item tower (shared by both tasks)::

    item_id_emb(i) + Linear(genre_multi_hot[i]) + Linear(year[i])  ->  MLP  ->  L2-normalise

User tower::

    attention pooling over the item-id embeddings (+ recency-position embeddings) of the last
    ``history_len`` items strictly before the target  [+ user-id embedding]  ->  MLP  ->  L2-normalise

Tasks, both trained with an in-batch sampled softmax over the item tower (``sampled_softmax_logits``):

* retrieval:  (user, history) -> next item
* item_item:  anchor item -> an item co-occurring within ``item_item_window`` positions of it

Scores are cosine similarities ``user_vec @ item_emb.T`` (the temperature only matters for training).
Item ids are shifted by +1 inside the model so that embedding row 0 is the padding row; the external
padding value is ``batching.PAD`` (-1).

For anonymous sessions (``score_histories``) the user-id embedding is simply left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recops.models.batching import PAD, Batch, check_item_features
from recops.models.config import TwoTowerConfig


def sampled_softmax_logits(query: torch.Tensor, candidates: torch.Tensor, pos_items: torch.Tensor,
                           cand_items: torch.Tensor, temperature: float,
                           log_q: torch.Tensor | None = None,
                           query_items: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of an in-batch sampled softmax; row i's positive is column i.

    query:      [B, d]  (normalised)      candidates: [C, d]  (normalised), C >= B; the first B
    pos_items:  [B]     item of row i's positive    cand_items: [C]  item of every candidate column
    log_q:      [C]     log of each candidate's expected sample count (logQ correction), or None

    ``logits[i, j] = <q_i, c_j> / T - log_q[j]``; a column j != i holding the same item as row i's
    positive is an accidental hit and is masked to -inf (it is not a negative). For item->item,
    ``query_items`` [B] (the anchors) additionally masks columns j != i holding the anchor itself: the
    shared tower makes that logit a constant 1/T that can never be pushed down.
    """
    batch = query.shape[0]
    logits = query @ candidates.T / temperature
    if log_q is not None:
        logits = logits - log_q[None, :]
    cols = torch.arange(candidates.shape[0], device=query.device)
    rows = torch.arange(batch, device=query.device)
    same_item = cand_items[None, :] == pos_items[:, None]
    if query_items is not None:
        same_item = same_item | (cand_items[None, :] == query_items[:, None])
    accidental = same_item & (cols[None, :] != rows[:, None])
    return logits.masked_fill(accidental, float("-inf"))


def expected_count_log_q(cand_items: torch.Tensor, n_in_batch: int, sample_prob: torch.Tensor,
                         n_uniform: int) -> torch.Tensor:
    """log of the expected number of times each candidate item appears in the candidate set when
    ``n_in_batch`` candidates are drawn from ``sample_prob`` (the in-batch positives) and ``n_uniform``
    uniformly (extra negatives): ``log(B * p_j + M / n_items)``. With M = 0 this is ``log p_j + const``."""
    n_items = sample_prob.shape[0]
    return torch.log(n_in_batch * sample_prob[cand_items] + n_uniform / n_items)


def _mlp(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))


class TwoTowerModel(nn.Module):
    trainable = True

    def __init__(self, config: TwoTowerConfig, n_users: int, n_items: int,
                 item_features: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.item_features = check_item_features(item_features, n_items)
        self.max_history_len = config.history_len
        d = config.dim

        # item side features (data, not parameters: kept out of the state_dict, stored in the checkpoint
        # payload). Missing features default to "no information": 0 genres, year 0, uniform popularity.
        feats = self.item_features
        genre = feats.get("genre_multi_hot", torch.zeros(n_items, 0))
        pop = feats.get("popularity", torch.ones(n_items)).clamp_min(1.0)  # add-one for never-seen items
        self.register_buffer("genre", genre, persistent=False)
        self.register_buffer("year", feats.get("year", torch.zeros(n_items)), persistent=False)
        self.register_buffer("sample_prob", pop / pop.sum(), persistent=False)

        # item tower
        self.item_id = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.genre_proj = nn.Linear(genre.shape[1], d, bias=False) if genre.shape[1] > 0 else None
        self.year_proj = nn.Linear(1, d)
        self.item_mlp = _mlp(d, config.dropout)

        # user tower
        self.position = nn.Embedding(config.history_len, d)  # index history_len-1 = most recent item
        self.attn_query = nn.Parameter(torch.zeros(d))
        self.user_id = nn.Embedding(n_users, d) if config.user_id_embedding else None
        self.user_mlp = _mlp(d, config.dropout)

        for emb in (self.item_id, self.position):
            nn.init.normal_(emb.weight, std=0.1)
        if self.user_id is not None:
            # zero: a user without train examples (e.g. new in the evaluation window) gets no gradient,
            # so their user-id embedding must contribute nothing rather than random noise
            nn.init.zeros_(self.user_id.weight)
        with torch.no_grad():
            self.item_id.weight[0].zero_()

    # ------------------------------------------------------------------ towers

    def item_tower(self, items: torch.Tensor) -> torch.Tensor:
        """LongTensor[...] of item indices -> normalised FloatTensor[..., d]."""
        h = self.item_id(items + 1) + self.year_proj(self.year[items].unsqueeze(-1))
        if self.genre_proj is not None:
            h = h + self.genre_proj(self.genre[items])
        return F.normalize(self.item_mlp(h), dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_tower(torch.arange(self.n_items, device=self.item_id.weight.device))

    def encode_users(self, user_idx: torch.Tensor | None, histories: torch.Tensor) -> torch.Tensor:
        """user_idx: LongTensor[B] or None (anonymous); histories: left-padded LongTensor[B, L] -> [B, d]."""
        hist = histories[:, -self.config.history_len:]
        length = hist.shape[1]
        valid = hist != PAD
        positions = torch.arange(self.config.history_len - length, self.config.history_len, device=hist.device)
        e = self.item_id((hist + 1).clamp_min(0)) + self.position(positions)
        logits = (e @ self.attn_query) / math.sqrt(self.config.dim)
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1) * valid  # all-PAD rows -> all-zero weights
        pooled = (weights.unsqueeze(-1) * e).sum(1)
        if user_idx is not None and self.user_id is not None:
            pooled = pooled + self.user_id(user_idx)
        return F.normalize(self.user_mlp(pooled), dim=-1)

    def encode_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_users(None, histories)

    def score_users(self, user_idx: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_users(user_idx, histories) @ self.item_embeddings().T

    def score_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_histories(histories) @ self.item_embeddings().T

    @torch.no_grad()
    def similar_items(self, item_idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items by cosine similarity of item-tower embeddings (the query item itself excluded).
        Call ``model.eval()`` first to switch dropout off."""
        emb = self.item_embeddings()
        sims = emb[item_idx] @ emb.T
        sims[torch.arange(len(item_idx), device=sims.device), item_idx] = float("-inf")
        top_scores, top_idx = torch.topk(sims, min(k, self.n_items - 1), dim=1)
        return top_idx, top_scores

    # ------------------------------------------------------------------ training

    def _task_loss(self, query: torch.Tensor, pos_items: torch.Tensor, extra: torch.Tensor | None,
                   query_items: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        cand_items = pos_items if extra is None else torch.cat([pos_items, extra])
        log_q = None
        if self.config.logq_correction:
            n_uniform = 0 if extra is None else len(extra)
            log_q = expected_count_log_q(cand_items, len(pos_items), self.sample_prob, n_uniform)
        logits = sampled_softmax_logits(query, self.item_tower(cand_items), pos_items, cand_items,
                                        self.config.temperature, log_q, query_items)
        labels = torch.arange(len(pos_items), device=logits.device)
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return F.cross_entropy(logits, labels), accuracy

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the retrieval and item-item in-batch softmax losses (see batching.two_tower_batches)."""
        w = self.config.task_weights
        extra = batch.get("extra_negatives")
        total = torch.zeros((), device=self.item_id.weight.device)
        logs: dict[str, float] = {}
        if w.retrieval > 0:
            query = self.encode_users(batch["user_idx"], batch["history"])
            loss_r, acc_r = self._task_loss(query, batch["target"], extra)
            total = total + w.retrieval * loss_r
            logs |= {"loss_retrieval": loss_r.item(), "in_batch_acc_retrieval": acc_r}
        if w.item_item > 0:
            anchor = batch["ii_anchor"]
            loss_ii, acc_ii = self._task_loss(self.item_tower(anchor), batch["ii_context"], extra, anchor)
            total = total + w.item_item * loss_ii
            logs |= {"loss_item_item": loss_ii.item(), "in_batch_acc_item_item": acc_ii}
        logs["loss"] = total.item()
        return total, logs
