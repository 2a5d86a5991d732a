import math

import numpy as np
import pydantic
import pytest
import torch

from recops.models import (
    PopularityConfig,
    SASRecConfig,
    TwoTowerConfig,
    build_model,
    checkpoint_payload,
    load_model,
    parse_model_config,
)
from recops.models.batching import PAD, make_batches, pad_histories, sasrec_batches, two_tower_batches
from recops.models.popularity import recency_weights
from recops.models.two_tower import expected_count_log_q, sampled_softmax_logits

N_USERS, N_ITEMS = 24, 40

TINY = {
    "two_tower": TwoTowerConfig(dim=16, history_len=6, dropout=0.0, extra_negatives=4),
    "sasrec": SASRecConfig(dim=16, max_len=12, n_layers=2, n_heads=2, dropout=0.1),
    "sasrec_sampled": SASRecConfig(dim=16, max_len=12, loss="sampled_softmax", n_negatives=16),
}


def make_data(seed: int = 0):
    """Sequences that walk through the catalog (item i is mostly followed by i + 1): easy to learn."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(N_USERS):
        start, length = rng.integers(0, N_ITEMS), rng.integers(4, 20)
        seqs.append(((start + np.arange(length)) % N_ITEMS).tolist())
    counts = torch.bincount(torch.tensor(sum(seqs, [])), minlength=N_ITEMS).float()
    feats = {
        "genre_multi_hot": torch.from_numpy((rng.random((N_ITEMS, 5)) < 0.3).astype(np.float32)),
        "year": torch.from_numpy(rng.normal(size=N_ITEMS).astype(np.float32)),
        "popularity": counts,
    }
    return seqs, feats


def train(config, steps: int = 30, seed: int = 0, lr: float = 1e-2):
    seqs, feats = make_data()
    torch.manual_seed(seed)
    model = build_model(config, N_USERS, N_ITEMS, feats)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    while len(losses) < steps:
        for batch in make_batches(config, seqs, N_ITEMS, batch_size=16, generator=gen):
            loss, logs = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(logs["loss"])
            if len(losses) == steps:
                break
    return model, losses


# ---------------------------------------------------------------------------------------------- config


def test_configs_are_frozen_strict_and_discriminated():
    cfg = parse_model_config({"kind": "two_tower", "task_weights": {"retrieval": 1.0, "item_item": 0.0}})
    assert isinstance(cfg, TwoTowerConfig) and cfg.task_weights.item_item == 0.0
    assert isinstance(parse_model_config({"kind": "sasrec"}), SASRecConfig)
    assert parse_model_config(cfg.model_dump()) == cfg
    with pytest.raises(pydantic.ValidationError):
        cfg.dim = 3
    with pytest.raises(pydantic.ValidationError):
        parse_model_config({"kind": "sasrec", "dimm": 64})
    with pytest.raises(pydantic.ValidationError):
        parse_model_config({"kind": "sasrec", "dim": 10, "n_heads": 3})
    with pytest.raises(pydantic.ValidationError):
        parse_model_config({"kind": "bert4rec"})


# ---------------------------------------------------------------------------------------------- batching


def test_pad_histories_left_pads_and_truncates():
    out = pad_histories([[1, 2, 3], [], [4, 5, 6, 7, 8]], max_len=4)
    assert out.dtype == torch.long
    assert out.tolist() == [[PAD, 1, 2, 3], [PAD] * 4, [5, 6, 7, 8]]


def test_sasrec_batches_shift_targets():
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10]]
    cfg = SASRecConfig(max_len=4)
    batches = list(sasrec_batches(seqs, cfg, N_ITEMS, batch_size=8, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 1
    b = batches[0]
    rows = {u: i for i, u in enumerate(b["user_idx"].tolist())}
    assert set(rows) == {0, 2}  # a single-item user has nothing to predict
    assert b["input"][rows[0]].tolist() == [PAD, PAD, 1, 2]
    assert b["target"][rows[0]].tolist() == [PAD, PAD, 2, 3]
    assert b["input"][rows[2]].tolist() == [6, 7, 8, 9]
    assert b["target"][rows[2]].tolist() == [7, 8, 9, 10]
    assert "negatives" not in b

    sliding = sasrec_batches([list(range(10))], cfg, N_ITEMS, 8, torch.Generator().manual_seed(0), stride=3)
    windows = sorted(next(iter(sliding))["target"].tolist())
    assert windows == [[PAD, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]  # windows end at 4, 7, 10


def test_two_tower_batches_history_strictly_before_target():
    seqs, _ = make_data()
    cfg = TINY["two_tower"]
    batches = two_tower_batches(seqs, cfg, N_ITEMS, 32, torch.Generator().manual_seed(0))
    assert batches.n_examples == sum(len(s) - 1 for s in seqs)
    n_checked = 0
    for b in batches:
        assert b["history"].shape[1] == cfg.history_len
        assert b["extra_negatives"].shape == (cfg.extra_negatives,)
        for u, hist, tgt, anchor, ctx in zip(*(b[k].tolist() for k in
                                               ("user_idx", "history", "target", "ii_anchor", "ii_context")),
                                             strict=True):
            seq = seqs[u]
            hist = [i for i in hist if i != PAD]
            t = len(seq) - 1 - seq[::-1].index(tgt)  # items are unique within a sequence here
            assert hist == seq[max(0, t - cfg.history_len):t]
            assert anchor == tgt
            c = seq.index(ctx)
            assert 0 < abs(c - t) <= cfg.item_item_window
            n_checked += 1
    assert n_checked == batches.n_examples


def test_batches_are_deterministic_given_seed():
    seqs, _ = make_data()
    for cfg in TINY.values():
        a = list(make_batches(cfg, seqs, N_ITEMS, 8, torch.Generator().manual_seed(3)))
        b = list(make_batches(cfg, seqs, N_ITEMS, 8, torch.Generator().manual_seed(3)))
        c = list(make_batches(cfg, seqs, N_ITEMS, 8, torch.Generator().manual_seed(4)))
        assert all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))
        assert any(not torch.equal(x["target"], y["target"]) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ["popularity", "two_tower", "sasrec"])
def test_output_shapes(name):
    seqs, feats = make_data()
    cfg = {"popularity": PopularityConfig(), "two_tower": TINY["two_tower"], "sasrec": TINY["sasrec"]}[name]
    model = build_model(cfg, N_USERS, N_ITEMS, feats).eval()
    hist = pad_histories(seqs[:5], 8)
    users = torch.arange(5)
    assert model.score_users(users, hist).shape == (5, N_ITEMS)
    assert model.score_histories(hist).shape == (5, N_ITEMS)
    u = model.encode_users(users, hist)
    emb = model.item_embeddings()
    assert emb.shape[0] == N_ITEMS and u.shape == (5, emb.shape[1])
    torch.testing.assert_close(u @ emb.T, model.score_users(users, hist))
    # a history longer than the model's window and an empty history both work
    assert model.score_histories(pad_histories([list(range(30)), []], 30)).isfinite().all()


def test_two_tower_similar_items_and_normalisation():
    _, feats = make_data()
    model = build_model(TINY["two_tower"], N_USERS, N_ITEMS, feats).eval()
    emb = model.item_embeddings()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(N_ITEMS))
    idx, scores = model.similar_items(torch.tensor([0, 7]), k=5)
    assert idx.shape == scores.shape == (2, 5)
    assert 0 not in idx[0].tolist() and 7 not in idx[1].tolist()
    torch.testing.assert_close(scores[1, 0], emb[7] @ emb[idx[1, 0]])


def test_sasrec_is_causal_and_position_aligned():
    model = build_model(TINY["sasrec"], N_USERS, N_ITEMS).eval()
    seq = torch.tensor([[PAD, PAD, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, -1] = 9
    h1, h2 = model.hidden_states(seq), model.hidden_states(changed)
    torch.testing.assert_close(h1[:, :-1], h2[:, :-1])  # the future does not leak into the past
    assert not torch.allclose(h1[:, -1], h2[:, -1])
    # extra left padding does not change the user representation
    torch.testing.assert_close(model.encode_histories(seq), model.encode_histories(pad_histories([[3, 4, 5, 6]], 12)))


def test_two_tower_padding_invariance():
    _, feats = make_data()
    model = build_model(TINY["two_tower"], N_USERS, N_ITEMS, feats).eval()
    a = model.encode_users(torch.tensor([1]), pad_histories([[3, 4, 5]], 3))
    b = model.encode_users(torch.tensor([1]), pad_histories([[3, 4, 5]], 6))
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- popularity


def test_popularity_counts_and_recency():
    model = build_model(PopularityConfig(), 2, 4, {"popularity": torch.tensor([1.0, 5, 3, 0])})
    assert model.score_histories(pad_histories([[0]], 1)).tolist() == [[1.0, 5, 3, 0]]
    day = 86_400
    weights = recency_weights(np.array([10 * day, 9 * day, 8 * day]), half_life_days=1.0)
    np.testing.assert_allclose(weights, [1.0, 0.5, 0.25])
    recent = build_model(PopularityConfig(half_life_days=1.0), 2, 4)
    with pytest.raises(RuntimeError):
        recent.item_embeddings()
    ts = np.array(["2024-01-03", "2024-01-02", "2024-01-02", "2024-01-01"], dtype="datetime64[s]")
    recent.fit(np.array([0, 1, 1, 2]), ts)
    torch.testing.assert_close(recent.scores, torch.tensor([1.0, 1.0, 0.25, 0.0]))
    with pytest.raises(TypeError):
        recent.loss({})


# ---------------------------------------------------------------------------------------------- losses


def test_logq_correction_hand_example():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([3, 5])
    log_q = torch.log(torch.tensor([0.5, 0.1]))
    plain = sampled_softmax_logits(q, c, items, items, temperature=0.5)
    corrected = sampled_softmax_logits(q, c, items, items, temperature=0.5, log_q=log_q)
    torch.testing.assert_close(plain, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    torch.testing.assert_close(corrected, plain - log_q[None, :])  # popular item 3 is penalised more
    assert corrected[0, 0] - corrected[0, 1] < plain[0, 0] - plain[0, 1]
    # expected candidate counts: B * p_j (+ M / N for uniform extra negatives)
    prob = torch.tensor([0.5, 0.3, 0.2, 0.0])
    torch.testing.assert_close(expected_count_log_q(torch.tensor([0, 2]), 4, prob, 0), torch.log(torch.tensor([2.0, 0.8])))
    torch.testing.assert_close(expected_count_log_q(torch.tensor([3]), 4, prob, 8), torch.log(torch.tensor([2.0])))


def test_accidental_hits_are_masked():
    q = torch.eye(3)
    c = torch.eye(3)
    pos = torch.tensor([7, 8, 7])  # rows 0 and 2 share the positive item
    extra = torch.tensor([8, 9])
    cand_items = torch.cat([pos, extra])
    cands = torch.cat([c, torch.zeros(2, 3)])
    logits = sampled_softmax_logits(q, cands, pos, cand_items, temperature=1.0)
    inf = float("-inf")
    assert logits[0].tolist() == [1.0, 0.0, inf, 0.0, 0.0]
    assert logits[1].tolist() == [0.0, 1.0, 0.0, inf, 0.0]
    assert logits[2].tolist() == [inf, 0.0, 1.0, 0.0, 0.0]
    # item->item: a column holding the anchor item itself is masked as well
    ii = sampled_softmax_logits(q, c, pos, pos, 1.0, query_items=torch.tensor([8, 1, 2]))
    assert ii[0].tolist() == [1.0, inf, inf]
    # masked columns really drop out of the loss
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    expected = -(torch.log_softmax(torch.tensor([1.0, 0.0, 0.0, 0.0]), 0)[0])
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("name", list(TINY))
def test_loss_decreases(name):
    _, losses = train(TINY[name], steps=30)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_two_tower_single_task_and_no_logq():
    cfg = TwoTowerConfig(dim=8, history_len=4, logq_correction=False, user_id_embedding=False,
                         task_weights={"retrieval": 1.0, "item_item": 0.0})
    model, losses = train(cfg, steps=3)
    batch = next(iter(make_batches(cfg, make_data()[0], N_ITEMS, 8, torch.Generator().manual_seed(0))))
    _, logs = model.loss(batch)
    assert "loss_item_item" not in logs and logs["loss"] == pytest.approx(logs["loss_retrieval"])


@pytest.mark.parametrize("name", list(TINY))
def test_same_seed_same_losses(name):
    assert train(TINY[name], steps=8, seed=1)[1] == train(TINY[name], steps=8, seed=1)[1]


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name", ["popularity", "popularity_recency", "two_tower", "sasrec"])
def test_checkpoint_round_trip(name, tmp_path):
    seqs, feats = make_data()
    if name.startswith("popularity"):
        cfg = PopularityConfig(half_life_days=2.0 if name == "popularity_recency" else None)
        model = build_model(cfg, N_USERS, N_ITEMS, feats)
        items = np.concatenate(seqs)
        model.fit(items, np.arange(len(items)) * 3600.0)
    else:
        cfg = TINY[name]
        model, _ = train(cfg, steps=3)
    model.eval()
    path = tmp_path / "model.pt"
    extra = {"epoch": 3, "metrics": {"ndcg@10": np.float64(0.1)}, "user_idx": np.arange(3)}
    torch.save(checkpoint_payload(model, cfg, extra=extra), path)
    payload = torch.load(path, weights_only=True)
    assert payload["config"] == cfg.model_dump() and payload["extra"]["epoch"] == 3
    assert type(payload["extra"]["metrics"]["ndcg@10"]) is float
    loaded = load_model(payload)
    assert type(loaded) is type(model) and not loaded.training
    hist, users = pad_histories(seqs, 12), torch.arange(N_USERS)
    assert torch.equal(loaded.score_users(users, hist), model.score_users(users, hist))


def test_checkpoint_rejects_non_plain_extra():
    model = build_model(PopularityConfig(), 2, 3, {"popularity": torch.ones(3)})
    with pytest.raises(TypeError):
        checkpoint_payload(model, PopularityConfig(), extra={"path": object()})
