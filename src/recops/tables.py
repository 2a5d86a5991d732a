"""Serialising frames to bytes and parsing dropped files strictly.

Parquet written here is deterministic: the same frame gives the same bytes, which is
what makes re-landing a period byte-identical and DVC hashes stable.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
CATALOG_COLUMNS = ["item_id", "title", "genres"]


class ParseError(ValueError):
    """A file that cannot be read as the table it claims to be."""


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


def from_parquet_bytes(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas()


def _check_utf8(name: str, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ParseError(
            f"{name}: not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}, line {line}); "
            "re-export the file as UTF-8"
        ) from None


def parse_table(name: str, data: bytes) -> pd.DataFrame:
    """Parse a landed file (``.parquet`` or ``.csv``) strictly, naming what is wrong."""
    if not data:
        raise ParseError(f"{name}: file is empty (0 bytes)")
    if name.endswith(".parquet"):
        try:
            return from_parquet_bytes(data)
        except (pa.ArrowInvalid, OSError) as err:
            raise ParseError(f"{name}: not a readable Parquet file ({err})") from None
    if name.endswith(".csv"):
        _check_utf8(name, data)
        try:
            table = pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(encoding="utf8"),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
            )
        except pa.ArrowInvalid as err:
            raise ParseError(f"{name}: malformed CSV ({err})") from None
        return table.to_pandas()
    raise ParseError(f"{name}: unsupported file type (expected .parquet or .csv)")


def normalise_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce benign representation differences (integer ids, integer ratings).

    Anything that is not benign (text in a numeric column, missing values) is left as
    it is so that validation reports it.
    """
    out = df.copy()
    for col in ("user_id", "item_id"):
        if col in out and pd.api.types.is_integer_dtype(out[col]):
            out[col] = out[col].astype(str)
    if "rating" in out and pd.api.types.is_integer_dtype(out["rating"]):
        out["rating"] = out["rating"].astype("float64")
    return out


def normalise_catalog(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if "item_id" in out and pd.api.types.is_integer_dtype(out["item_id"]):
        out["item_id"] = out["item_id"].astype(str)
    if "genres" in out:
        out["genres"] = out["genres"].fillna("")
    return out
