"""Recommender: inference over a model.pt written like train does, for every model kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recops.metrics import topk_full_ranking
from recops.models import (
    PopularityConfig,
    SASRecConfig,
    TwoTowerConfig,
    build_model,
    checkpoint_payload,
    load_model,
)
from recops.models.batching import pad_histories
from recops.recommender import Recommendation, Recommender

N_USERS, N_ITEMS = 8, 15
CONFIGS = {
    "popularity": PopularityConfig(),
    "two_tower": TwoTowerConfig(dim=8, history_len=5, dropout=0.0),
    "sasrec": SASRecConfig(dim=8, max_len=6, n_layers=1, n_heads=2, dropout=0.0),
}


def make_payload(kind: str, seed: int = 0, n_users: int = N_USERS, n_items: int = N_ITEMS) -> dict:
    """A model.pt payload as train writes it: tiny untrained model + id maps + histories."""
    rng = np.random.default_rng(seed)
    histories = [rng.choice(n_items, size=int(rng.integers(2, 9)), replace=False).tolist() for _ in range(n_users)]
    histories[-1] = list(range(n_items - 1))  # a user who has seen all but one item
    popularity = torch.bincount(torch.tensor(sum(histories, [])), minlength=n_items).float()
    feats = {
        "genre_multi_hot": torch.from_numpy((rng.random((n_items, 3)) < 0.4).astype(np.float32)),
        "year": torch.from_numpy(rng.normal(size=n_items).astype(np.float32)),
        "popularity": popularity,
    }
    torch.manual_seed(seed)
    config = CONFIGS[kind]
    model = build_model(config, n_users, n_items, feats).eval()
    with torch.no_grad():
        item_emb = model.item_embeddings().clone()
    extra = {
        "user_ids": [str(100 + u) for u in range(n_users)],
        "item_ids": [f"m{i}" for i in range(n_items)],
        "user_histories": histories,
        "item_embeddings": item_emb,
        "popularity": popularity,
        "best_epoch": 1,
        "val_metrics": {"ndcg@10": 0.1},
        "feature_meta": {"n_genres": 3},
    }
    return checkpoint_payload(model, config, extra)


@pytest.fixture(scope="module", params=list(CONFIGS))
def payload(request) -> dict:
    return make_payload(request.param)


@pytest.fixture(scope="module")
def rec(payload) -> Recommender:
    return Recommender.from_payload(payload)


def test_load_from_file_weights_only(tmp_path: Path, payload: dict) -> None:
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    rec = Recommender.load(path)
    assert rec.kind == payload["kind"]
    assert rec.n_items == N_ITEMS
    assert rec.version is None
    rec.version = "3"
    assert "version='3'" in repr(rec)
    assert rec.metadata["best_epoch"] == 1
    assert rec.recommend_users(["100"], 5) == Recommender.from_payload(payload).recommend_users(["100"], 5)


def test_known_users_match_raw_model_scoring(rec: Recommender, payload: dict) -> None:
    """Same lists and scores as scoring the raw model the way evaluation does."""
    model = load_model(payload)
    extra = payload["extra"]
    users = list(range(N_USERS))
    hists = [extra["user_histories"][u] for u in users]
    with torch.no_grad():
        width = max(len(h) for h in hists)
        scores = model.score_users(torch.tensor(users), pad_histories(hists, min(width, model.max_history_len)))
    top_idx, top_scores = topk_full_ranking(scores, hists, 4)

    got = rec.recommend_users([extra["user_ids"][u] for u in users], 4)
    for u, r in enumerate(got):
        assert isinstance(r, Recommendation) and r.fallback is False
        want = [i for i in top_idx[u].tolist() if i >= 0]
        assert r.item_ids == [extra["item_ids"][i] for i in want]
        np.testing.assert_allclose(r.scores, top_scores[u, : len(want)].numpy(), rtol=1e-5, atol=1e-6)
        assert r.scores == sorted(r.scores, reverse=True)


def test_seen_items_excluded(rec: Recommender, payload: dict) -> None:
    extra = payload["extra"]
    for u, user_id in enumerate(extra["user_ids"]):
        seen = {extra["item_ids"][i] for i in extra["user_histories"][u]}
        r = rec.recommend_users([user_id], N_ITEMS)[0]
        assert not seen & set(r.item_ids)
        assert len(r.item_ids) == N_ITEMS - len(seen)  # k clipped by what is left, no padding leaks
        assert len(set(r.item_ids)) == len(r.item_ids) == len(r.scores)
    # opting out of the exclusion ranks the whole catalog
    r = rec.recommend_users([extra["user_ids"][-1]], N_ITEMS, exclude_seen=False)[0]
    assert sorted(r.item_ids) == sorted(extra["item_ids"])


def test_unknown_user_gets_popularity_fallback(rec: Recommender, payload: dict) -> None:
    extra = payload["extra"]
    known, unknown = extra["user_ids"][0], "no-such-user"
    got = rec.recommend_users([unknown, known, unknown], 3)
    assert [r.fallback for r in got] == [True, False, True]
    pop = extra["popularity"]
    order = np.argsort(-pop.numpy(), kind="stable")[:3]
    assert got[0].item_ids == [extra["item_ids"][i] for i in order]
    assert got[0].scores == pop[order].tolist()
    assert got[0] == got[2]
    assert got[1] == rec.recommend_users([known], 3)[0]  # batching does not change results


def test_k_bounded(rec: Recommender) -> None:
    r = rec.recommend_users(["no-such-user"], 10_000)[0]
    assert len(r.item_ids) == N_ITEMS
    r = rec.recommend_history(["m1"], 10_000, exclude_seen=False)
    assert len(r.item_ids) == N_ITEMS
    with pytest.raises(ValueError, match="k=0"):
        rec.recommend_users(["100"], 0)


def test_recommend_history(rec: Recommender, payload: dict) -> None:
    model = load_model(payload)
    r = rec.recommend_history(["m3", "unknown-item", "m5"], 5)
    assert r.fallback is False
    assert not {"m3", "m5"} & set(r.item_ids)
    with torch.no_grad():
        scores = model.score_histories(pad_histories([[3, 5]], 2))
    top_idx, top_scores = topk_full_ranking(scores, [[3, 5]], 5)
    assert r.item_ids == [f"m{i}" for i in top_idx[0].tolist()]
    np.testing.assert_allclose(r.scores, top_scores[0].numpy(), rtol=1e-5, atol=1e-6)
    # nothing known -> popularity fallback; batched sessions keep input order
    none_known = rec.recommend_history(["x", "y"], 5)
    assert none_known.fallback is True
    assert none_known == rec.recommend_users(["no-such-user"], 5)[0]
    assert rec.recommend_histories([["x"], ["m3", "m5"], []], 5) == [none_known, r, none_known]


def test_similar_items(rec: Recommender, payload: dict) -> None:
    r = rec.similar_items("m2", 5)
    assert "m2" not in r.item_ids
    assert len(r.item_ids) == len(set(r.item_ids)) == 5
    assert r.scores == sorted(r.scores, reverse=True)
    assert len(rec.similar_items("m2", 10_000).item_ids) == N_ITEMS - 1
    if payload["kind"] == "popularity":
        assert r.fallback is True
    else:
        assert r.fallback is False
        emb = torch.nn.functional.normalize(load_model(payload).item_embeddings().detach(), dim=1)
        sims = emb[2] @ emb.T
        sims[2] = -float("inf")
        want = torch.topk(sims, 5)
        assert r.item_ids == [f"m{i}" for i in want.indices.tolist()]
        np.testing.assert_allclose(r.scores, want.values.numpy(), rtol=1e-5, atol=1e-6)
        assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in r.scores)
    with pytest.raises(KeyError, match="unknown item id 'nope'"):
        rec.similar_items("nope", 3)


def test_two_tower_similar_items_agree_with_model() -> None:
    payload = make_payload("two_tower", seed=3)
    model = load_model(payload)
    top_idx, top_scores = model.similar_items(torch.tensor([4]), 6)
    r = Recommender.from_payload(payload).similar_items("m4", 6)
    assert r.item_ids == [f"m{i}" for i in top_idx[0].tolist()]
    np.testing.assert_allclose(r.scores, top_scores[0].numpy(), rtol=1e-5, atol=1e-6)


def test_long_histories_truncated_and_batched(payload: dict) -> None:
    """Histories longer than max_history_len and batch boundaries give the same answers as one-by-one."""
    rec_small = Recommender.from_payload(payload, batch_size=3)
    rec_big = Recommender.from_payload(payload)
    users = payload["extra"]["user_ids"] + ["ghost"]
    batched = rec_small.recommend_users(users, 6)
    for user_id, got in zip(users, batched, strict=True):
        alone = rec_big.recommend_users([user_id], 6)[0]
        assert (got.item_ids, got.fallback) == (alone.item_ids, alone.fallback)
        np.testing.assert_allclose(got.scores, alone.scores, rtol=1e-5, atol=1e-6)  # padding width differs


def test_rejects_payload_without_ids() -> None:
    payload = make_payload("popularity")
    del payload["extra"]["user_ids"]
    with pytest.raises(ValueError, match="user_ids"):
        Recommender.from_payload(payload)
