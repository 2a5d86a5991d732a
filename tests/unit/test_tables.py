import pandas as pd
import pytest

from recops.tables import (
    ParseError,
    from_parquet_bytes,
    normalise_interactions,
    parse_table,
    to_parquet_bytes,
)


def test_parquet_bytes_are_deterministic() -> None:
    df = pd.DataFrame({"user_id": ["1", "2"], "rating": [1.0, 2.0]})
    assert to_parquet_bytes(df) == to_parquet_bytes(df.copy())
    assert from_parquet_bytes(to_parquet_bytes(df)).equals(df)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("x.csv", b"", "empty"),
        ("x.csv", "user_id,item_id\n1,caf\xe9\n".encode("latin-1"), "not valid UTF-8.*line 2"),
        ("x.csv", b"user_id,item_id,rating,timestamp\n1,2,3.0,4\n5,6\n", "malformed CSV"),
        ("x.parquet", b"PAR1 this is not parquet", "not a readable Parquet"),
        ("x.json", b"{}", "unsupported file type"),
    ],
)
def test_parse_errors_name_the_problem(name: str, data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_table(name, data)


def test_csv_types_are_inferred_and_normalised() -> None:
    df = normalise_interactions(parse_table("x.csv", b"user_id,item_id,rating,timestamp\n1,2,4,100\n"))
    assert df["user_id"].tolist() == ["1"]
    assert df["rating"].dtype == "float64"
    assert df["timestamp"].dtype == "int64"
