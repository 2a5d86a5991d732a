"""SASRec: a causal transformer over the user's item sequence (Kang & McAuley, 2018).

* Pre-LN blocks as in the paper (``x + Dropout(sublayer(LayerNorm(x)))``) with a final LayerNorm,
  point-wise feed-forward of width ``dim``, learned positional embeddings.
* Sequences are right-aligned (left-padded, ``batching.PAD = -1``): the most recent item always sits at
  position ``max_len - 1``, so a history shorter than ``max_len`` gets the same positions in training and
  at inference. Item ids are shifted by +1 inside the model; embedding row 0 is padding.
* Input and output item embeddings are shared: ``score = h @ item_emb.T``.
* The user representation is the hidden state at the last position.
* Loss ``full_ce`` (SASRec+CE): cross entropy over the whole catalog at every non-padding position.
  Loss ``sampled_softmax``: the positive vs ``n_negatives`` uniform negatives shared across the batch,
  accidental hits masked. The proposal is uniform, so the logQ correction is the same constant for every
  candidate and cancels in the softmax: no correction is applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from recops.models.batching import PAD, Batch, check_item_features
from recops.models.config import SASRecConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, L, d]; attn_mask: bool [B, 1, L, L], True = may attend."""
        b, length, d = x.shape
        q, k, v = (t.view(b, length, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for t in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), attn_mask))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRecModel(nn.Module):
    trainable = True

    def __init__(self, config: SASRecConfig, n_users: int, n_items: int,
                 item_features: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.item_features = check_item_features(item_features, n_items)  # unused: ID-only model
        self.max_history_len = config.max_len
        d = config.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        for emb in (self.item_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def hidden_states(self, seqs: torch.Tensor) -> torch.Tensor:
        """Left-padded LongTensor[B, L] (L <= max_len is fine, longer is truncated) -> [B, L, d];
        output t only depends on inputs <= t. Outputs at PAD positions are meaningless."""
        seqs = seqs[:, -self.config.max_len:]
        length = seqs.shape[1]
        valid = seqs != PAD
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=seqs.device)
        x = self.item_emb((seqs + 1).clamp_min(0)) * math.sqrt(self.config.dim) + self.pos_emb(positions)
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        # causal + key padding; every position may attend to itself so no row is fully masked (NaN-free).
        eye = torch.eye(length, dtype=torch.bool, device=seqs.device)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=seqs.device))
        attn_mask = (causal & (valid[:, None, :] | eye)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln_f(x)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight[1:]

    def encode_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(histories)[:, -1]

    def encode_users(self, user_idx: torch.Tensor | None, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_histories(histories)  # no user-id embedding: the sequence is the user

    def score_histories(self, histories: torch.Tensor) -> torch.Tensor:
        return self.encode_histories(histories) @ self.item_embeddings().T

    def score_users(self, user_idx: torch.Tensor | None, histories: torch.Tensor) -> torch.Tensor:
        return self.score_histories(histories)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-item loss at every non-padding position (see batching.sasrec_batches for the keys)."""
        target = batch["target"]
        valid = target != PAD
        h = self.hidden_states(batch["input"])[valid]  # [N, d]
        target = target[valid]
        emb = self.item_embeddings()
        if self.config.loss == "full_ce":
            loss = F.cross_entropy(h @ emb.T, target)
        else:
            negatives = batch["negatives"]
            pos_logits = (h * emb[target]).sum(-1, keepdim=True)
            neg_logits = (h @ emb[negatives].T).masked_fill(negatives[None, :] == target[:, None], float("-inf"))
            logits = torch.cat([pos_logits, neg_logits], dim=1)
            loss = F.cross_entropy(logits, torch.zeros(len(target), dtype=torch.long, device=logits.device))
        return loss, {"loss": loss.item(), "n_positions": float(len(target))}
