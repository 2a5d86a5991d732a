"""Unit tests for the MovieLens readers on tiny hand-written files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from recops.sources import INTERACTION_COLUMNS, MovieLensData, find_movielens_dir, read_movielens

RATINGS_CSV = """userId,movieId,rating,timestamp
2,10,4.5,1000
10,3,3.0,1000
1,2,5.0,999
2,2,1.0,1000
"""
MOVIES_CSV = """movieId,title,genres
2,"American President, The (1995)",Comedy|Drama|Romance
3,Amélie (2001),Comedy|Romance
10,"""  # completed below: a title with embedded quotes
MOVIES_CSV += '"""Great Performances"" Cats (1998)",(no genres listed)\n'
TAGS_CSV = """userId,movieId,tag,timestamp
2,10,"funny, sad",1500
1,2,classic,1400
"""


def _write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (folder / name).write_bytes(data)
    return folder


def _assert_interactions_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(INTERACTION_COLUMNS)
    assert [str(t) for t in frame.dtypes] == ["object", "object", "float64", "int64"]
    assert all(isinstance(v, str) for v in frame["user_id"])
    assert all(isinstance(v, str) for v in frame["item_id"])
    assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_csv_layout(tmp_path: Path) -> None:
    folder = _write(tmp_path, {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV, "tags.csv": TAGS_CSV})

    data = read_movielens(folder)

    _assert_interactions_schema(data.interactions)
    # sorted by (timestamp, user_id, item_id) with string order for ids ("10" < "2")
    assert data.interactions[["user_id", "item_id"]].values.tolist() == [
        ["1", "2"],
        ["10", "3"],
        ["2", "10"],
        ["2", "2"],
    ]
    assert data.interactions["rating"].tolist() == [5.0, 3.0, 4.5, 1.0]
    assert data.interactions["timestamp"].tolist() == [999, 1000, 1000, 1000]

    catalog = data.catalog
    assert list(catalog.columns) == ["item_id", "title", "genres"]
    assert catalog["item_id"].tolist() == ["2", "3", "10"]
    assert catalog["title"].tolist() == [
        "American President, The (1995)",
        "Amélie (2001)",
        '"Great Performances" Cats (1998)',
    ]
    assert catalog["genres"].tolist() == ["Comedy|Drama|Romance", "Comedy|Romance", ""]

    assert data.tags is not None
    assert list(data.tags.columns) == ["user_id", "item_id", "tag", "timestamp"]
    assert data.tags.values.tolist() == [["1", "2", "classic", 1400], ["2", "10", "funny, sad", 1500]]


def test_csv_without_tags(tmp_path: Path) -> None:
    data = read_movielens(_write(tmp_path, {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV}))
    assert data.tags is None


def test_result_is_frozen(tmp_path: Path) -> None:
    data = read_movielens(_write(tmp_path, {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV}))
    assert isinstance(data, MovieLensData)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.tags = None  # type: ignore[misc]


def test_dat_layout_ml1m_latin1(tmp_path: Path) -> None:
    ratings = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300760\n"
    movies = (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Misérables, Les (1995)::Drama|Musical\n"
        "2::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
    ).encode("latin-1")
    folder = _write(
        tmp_path, {"ratings.dat": ratings, "movies.dat": movies, "users.dat": "1::F::1::10::48067\n"}
    )

    data = read_movielens(folder)

    _assert_interactions_schema(data.interactions)
    assert data.interactions.values.tolist() == [
        ["1", "1193", 5.0, 978300760],
        ["2", "1193", 4.0, 978300760],
        ["1", "661", 3.0, 978302109],
    ]
    titles = dict(zip(data.catalog["item_id"], data.catalog["title"], strict=True))
    assert titles["661"] == "Misérables, Les (1995)"
    assert titles["2"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert data.catalog["genres"].tolist() == ["Drama", "Drama|Musical", "Action|Sci-Fi"]
    assert data.tags is None


def test_dat_layout_ml10m_with_tags(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "ratings.dat": "1::122::4.5::838985046\n",
        "movies.dat": '122::"Great Performances" Cats (1998)::(no genres listed)\n',
        "tags.dat": "15::122::Épique: a tag with : colons::1162160236\n".encode("latin-1"),
    }
    data = read_movielens(_write(tmp_path, files))

    assert data.interactions["rating"].tolist() == [4.5]
    assert data.catalog.values.tolist() == [["122", '"Great Performances" Cats (1998)', ""]]
    assert data.tags is not None
    assert data.tags.values.tolist() == [["15", "122", "Épique: a tag with : colons", 1162160236]]


def test_folder_with_single_subfolder(tmp_path: Path) -> None:
    inner = _write(tmp_path / "ml-latest-small", {"ratings.csv": RATINGS_CSV, "movies.csv": MOVIES_CSV})
    (tmp_path / ".DS_Store").write_text("ignored")

    assert find_movielens_dir(tmp_path) == inner
    assert len(read_movielens(tmp_path).interactions) == 4


def test_missing_required_file_names_folder_and_files(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml", {"ratings.csv": RATINGS_CSV})
    with pytest.raises(FileNotFoundError) as excinfo:
        read_movielens(folder)
    message = str(excinfo.value)
    assert str(folder) in message
    assert "movies.csv" in message
    assert "ratings.csv" in message  # lists what it looked for


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_movielens(tmp_path / "nope")


def test_unrecognised_layout_names_what_was_found(tmp_path: Path) -> None:
    _write(tmp_path, {"u.data": "1\t2\t3\t4\n", "notes.txt": "x"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"unrecognised MovieLens layout.*notes\.txt.*u\.data"):
        read_movielens(tmp_path)


def test_bad_header_is_a_clear_error(tmp_path: Path) -> None:
    folder = _write(tmp_path, {"ratings.csv": "user,item,score,ts\n1,2,3,4\n", "movies.csv": MOVIES_CSV})
    with pytest.raises(ValueError, match=r"ratings\.csv lacks column"):
        read_movielens(folder)
