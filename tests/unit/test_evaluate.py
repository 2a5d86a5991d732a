import numpy as np
import pytest
import torch

from recops.config import EvaluationParams, FeatureParams
from recops.dataset import FeatureData
from recops.evaluate import evaluate
from recops.features import build_features
from recops.models import build_model
from recops.models.config import PopularityConfig, TwoTowerConfig
from tests.conftest import synthetic_catalog, synthetic_events

EP = EvaluationParams(ks=[1, 5, 10], slices={"few_interactions_max": 3, "long_tail_share": 0.5})


@pytest.fixture(scope="module")
def features() -> FeatureData:
    fs = build_features(synthetic_events(n_users=60, n_items=40, per_user=15, seed=4), synthetic_catalog(40),
                        FeatureParams(implicit_threshold=0.0, kcore={"user": 2, "item": 2}))
    return FeatureData(fs.interactions, fs.users, fs.items, fs.meta)


def ids(fd: FeatureData):
    return (fd.users.sort_values("user_idx")["user_id"].tolist(), fd.items.sort_values("item_idx")["item_id"].tolist())


def popularity(fd: FeatureData, counts=None):
    pop = torch.as_tensor(counts if counts is not None else fd.item_features()["popularity"])
    return build_model(PopularityConfig(), fd.n_users, len(pop), {"popularity": pop.float()})


def test_popularity_hits_match_a_hand_count(features) -> None:
    users, items = ids(features)
    ev = evaluate(popularity(features), users, items, features, EP)
    held = features.held_out("test")
    counts = features.item_features()["popularity"].numpy()
    expected = []
    for hist, tgt in zip(held.histories, held.targets, strict=True):
        ranked = [i for i in np.argsort(-counts, kind="stable") if i not in set(hist)]
        expected.append(float(ranked[0] in set(tgt)))
    assert ev.overall["hit_rate@1"] == pytest.approx(np.mean(expected))
    assert ev.overall["n_users"] == len(held)
    assert len(ev.per_user) == len(held) and ev.per_user["user_id"].is_unique


def test_model_with_another_id_order_scores_identically(features) -> None:
    users, items = ids(features)
    perm = np.random.default_rng(0).permutation(features.n_items)
    counts = features.item_features()["popularity"].numpy()[perm] + np.linspace(0, 1e-3, features.n_items)[perm]
    counts0 = features.item_features()["popularity"].numpy() + np.linspace(0, 1e-3, features.n_items)
    base = evaluate(popularity(features, counts0), users, items, features, EP)
    other = evaluate(popularity(features, counts), users, [items[i] for i in perm], features, EP)
    assert other.overall == pytest.approx(base.overall)


def test_older_model_that_lacks_items_and_users_still_evaluates(features) -> None:
    users, items = ids(features)
    keep = features.n_items - 5
    model = build_model(TwoTowerConfig(dim=8, history_len=5), len(users) - 10, keep,
                        {k: v[:keep] for k, v in features.item_features().items()})
    ev = evaluate(model, users[:-10], items[:keep], features, EP)
    assert ev.overall["n_users"] == len(features.held_out("test"))
    assert 0 <= ev.overall["recall@10"] <= 1


def test_slices_are_reported(features) -> None:
    users, items = ids(features)
    ev = evaluate(popularity(features), users, items, features, EP, window="val")
    assert ev.window == "val"
    assert set(ev.slices) <= {"few_interactions", "long_tail"} and "long_tail" in ev.slices
    assert ev.slices["long_tail"]["n_users"] <= ev.overall["n_users"]
