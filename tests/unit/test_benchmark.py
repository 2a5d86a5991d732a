"""``recops.benchmark`` (published leave-one-out protocol), its CLI command and the benchmark scripts' helpers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recops.benchmark import (
    KS,
    leave_last_out_features,
    published_metrics,
    read_sequences,
    write_sequences,
)
from recops.cli import app

REPO = Path(__file__).resolve().parents[2]


def _load_script(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- read_sequences
def test_read_pairs_groups_by_user_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1 10\n2 7\n1 3\n\n1 10\n2 8\n")
    assert read_sequences(path, "pairs") == {"1": ["10", "3", "10"], "2": ["7", "8"]}


def test_read_lines_concatenates_repeated_users(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("u1 a b c\n\nu2 d e\nu1 f\n")
    assert read_sequences(path, "lines") == {"u1": ["a", "b", "c", "f"], "u2": ["d", "e"]}


@pytest.mark.parametrize(
    ("fmt", "text", "bad_line"),
    [
        ("pairs", "1 10\n1 11\n1 12 13\n", 3),
        ("pairs", "1 10\n\n7\n", 3),
        ("lines", "u1 a b\nu2\n", 2),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, fmt: str, text: str, bad_line: int) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"bad\.txt:{bad_line}: expected .*\({fmt} format\)"):
        read_sequences(path, fmt)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no sequences found"):
        read_sequences(path, "pairs")


@pytest.mark.parametrize("fmt", ["pairs", "lines"])
def test_write_read_round_trip(tmp_path: Path, fmt: str) -> None:
    seqs = {"3": ["5", "1", "5", "2"], "1": ["7", "8"], "10": ["1"]}
    path = tmp_path / f"seqs.{fmt}"
    write_sequences(seqs, path, fmt)
    back = read_sequences(path, fmt)
    assert back == seqs
    assert list(back) == list(seqs)  # user order kept too


# --------------------------------------------------------------------------- leave_last_out_features
def test_leave_last_out_splits() -> None:
    seqs = {"a": ["1", "2", "9", "10"], "b": ["2", "11"], "c": ["9", "1", "11"], "d": ["10"]}
    fd = leave_last_out_features(seqs)
    assert (fd.n_users, fd.n_items) == (4, 5)
    assert fd.users["user_id"].tolist() == ["a", "b", "c", "d"]
    assert fd.items["item_id"].tolist() == ["1", "2", "9", "10", "11"]  # numeric-looking ids keep numeric order
    item = {i: n for n, i in enumerate(fd.items["item_id"])}

    by_user = {u: g for u, g in fd.interactions.groupby("user_idx")}
    assert by_user[0]["split"].tolist() == ["train", "train", "val", "test"]
    assert by_user[1]["split"].tolist() == ["train", "train"]  # < 3 items: train only
    assert by_user[2]["split"].tolist() == ["train", "val", "test"]
    assert by_user[3]["split"].tolist() == ["train"]
    assert by_user[0]["item_idx"].tolist() == [item[i] for i in seqs["a"]]
    assert (fd.interactions.groupby("user_idx")["timestamp"].diff().dropna() > 0).all()  # chronological

    train = fd.sequences(("train",))
    assert [t.tolist() for t in train] == [[item["1"], item["2"]], [item["2"], item["11"]], [item["9"]], [item["10"]]]

    test = fd.held_out("test")
    assert test.user_idx.tolist() == [0, 2]
    assert [h.tolist() for h in test.histories] == [[item["1"], item["2"], item["9"]], [item["9"], item["1"]]]
    assert [t.tolist() for t in test.targets] == [[item["10"]], [item["11"]]]

    val = fd.held_out("val")
    assert val.user_idx.tolist() == [0, 2]
    assert [h.tolist() for h in val.histories] == [[item["1"], item["2"]], [item["9"]]]
    assert [t.tolist() for t in val.targets] == [[item["9"]], [item["1"]]]


def test_published_metrics_keys_and_rounding() -> None:
    overall = {f"{m}@{k}": 1 / (k + 3) for k in (5, 10, 20, 50) for m in ("hit_rate", "ndcg", "recall")}
    out = published_metrics(overall)
    assert list(out) == ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20"]
    assert KS == (5, 10, 20)
    assert out["HR@5"] == round(1 / 8, 4) and out["NDCG@20"] == round(1 / 23, 4)


# --------------------------------------------------------------------------- CLI
def _tiny_lines_file(path: Path, n_users: int = 30, n_items: int = 20, seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        n = int(rng.integers(2, 9))
        seqs[f"u{u}"] = [f"i{i}" for i in rng.choice(n_items, size=n, replace=False)]
    seqs["u0"] = [f"i{i}" for i in range(n_items)]  # every item occurs
    write_sequences(seqs, path, "lines")
    return seqs


def test_cli_benchmark_sequential_popularity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n  checkpoint_dir: ckpt\n")
    seqs = _tiny_lines_file(tmp_path / "tiny.txt")
    res = CliRunner().invoke(app, ["benchmark", "sequential", "--sequences", "tiny.txt", "--format", "lines",
                                   "--output", "out.json", "--model", "popularity"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out.json").read_text())
    for key in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["HR@5"] <= out["HR@10"] <= out["HR@20"] and out["NDCG@5"] <= out["NDCG@10"] <= out["NDCG@20"]
    # 20 items, k = 20: every item outside the history is in the top 20, so every target is hit
    assert out["HR@20"] == 1.0
    assert (out["model"], out["users"], out["items"], out["epochs_run"]) == ("popularity", len(seqs), 20, 1)
    assert not (tmp_path / "ckpt" / "last.pt").exists()  # the pipeline checkpoint is never touched


def test_cli_benchmark_sequential_reports_malformed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")
    (tmp_path / "bad.txt").write_text("1 2\n1 2 3\n")
    res = CliRunner().invoke(app, ["benchmark", "sequential", "--sequences", "bad.txt", "--model", "popularity"])
    assert res.exit_code == 1
    assert "bad.txt:2" in res.output


# --------------------------------------------------------------------------- benchmarks/sequential.py helpers
def _tiny_movielens(folder: Path) -> None:
    folder.mkdir()
    # file order = (user, movieId numerically), like the official files; user 1 rated 9 and 10 in the same
    # second: the file order (9 before 10) must win over string order ("10" < "9"). Movie 13 is rated once.
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,9,4.0,100\n1,10,1.0,100\n1,11,3.5,50\n1,12,5.0,200\n"
        "2,9,2.0,100\n2,10,3.0,300\n2,11,4.0,400\n"
        "3,12,4.0,10\n3,13,4.0,20\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},Movie {m} (2000),Drama\n" for m in range(9, 14))
    )


def test_movielens_conversion_order_and_single_pass_kcore(tmp_path: Path) -> None:
    seq = _load_script("sequential")
    _tiny_movielens(tmp_path / "ml")
    seqs, stats = seq.movielens_sequences(tmp_path / "ml", min_user=2, min_item=2, mode="single")
    # ids by first appearance in the filtered file: users 1,2,3 -> 1,2,3; movies 9,10,11,12 -> 1,2,3,4
    assert seqs == {"1": ["3", "1", "2", "4"], "2": ["1", "2", "3"], "3": ["4"]}
    assert stats["kcore"]["passes"] == 1 and stats["users_below_min_after_filter"] == 1


def test_movielens_conversion_iterative_kcore(tmp_path: Path) -> None:
    seq = _load_script("sequential")
    _tiny_movielens(tmp_path / "ml")
    seqs, stats = seq.movielens_sequences(tmp_path / "ml", min_user=2, min_item=2, mode="iterative")
    assert seqs == {"1": ["3", "1", "2"], "2": ["1", "2", "3"]}
    assert stats["users_below_min_after_filter"] == 0 and stats["items_below_min_after_filter"] == 0


def test_override_parsing_and_per_model_settings(tmp_path: Path) -> None:
    seq = _load_script("sequential")
    assert seq.parse_override("train.epochs=200") == (None, ["train", "epochs"], 200)
    assert seq.parse_override("sasrec:model.sasrec.loss=full_ce") == ("sasrec", ["model", "sasrec", "loss"], "full_ce")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        seq.parse_override("train.epochs")
    with pytest.raises(ValueError, match="unknown model"):
        seq.parse_override("bert4rec:train.epochs=3")
    raw = {"train": {"epochs": 30, "patience": 3}}
    overrides = ["train.epochs=200", "two_tower:train.epochs=40", "model.sasrec.max_len=50"]
    tt = seq.model_settings(raw, overrides, "two_tower", tmp_path / "ck")
    sas = seq.model_settings(raw, overrides, "sasrec", tmp_path / "ck")
    assert tt["train"]["epochs"] == 40 and sas["train"]["epochs"] == 200
    assert sas["model"] == {"sasrec": {"max_len": 50}, "kind": "sasrec"}
    assert sas["train"]["checkpoint_dir"] == str(tmp_path / "ck")
    assert raw == {"train": {"epochs": 30, "patience": 3}}  # the loaded params are not modified
