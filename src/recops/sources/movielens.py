"""Readers for the official MovieLens releases.

Supported layouts (auto-detected):

* CSV (ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m): ``ratings.csv``, ``movies.csv``
  and optional ``tags.csv``, UTF-8 with a header row and quoted titles.
* ``::``-separated ``.dat`` (ml-1m, ml-10m): ``ratings.dat``, ``movies.dat`` and optional
  ``tags.dat`` (ml-10m); text files may be UTF-8 or latin-1.

Parsing uses pyarrow's multi-threaded C++ CSV reader; ``::`` is rewritten to a single byte
that does not occur in the file so no Python-level row loop is needed even for 25M rows.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recops.sources.eventlog import canonical_catalog, canonical_interactions, ids_to_str, sort_order

logger = logging.getLogger(__name__)

TAG_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "tag", "timestamp")

_LAYOUTS: dict[str, dict[str, str]] = {
    "csv": {"ratings": "ratings.csv", "movies": "movies.csv", "tags": "tags.csv"},
    "dat": {"ratings": "ratings.dat", "movies": "movies.dat", "tags": "tags.dat"},
}
_REQUIRED = ("ratings", "movies")
_IGNORED_ENTRIES = {"__MACOSX"}
# Candidate single-byte separators for ``::`` files, tried in order.
_SEPARATORS = (b"\t", b"\x1f", b"\x1e", b"\x1d", b"\x1c")


@dataclass(frozen=True)
class MovieLensData:
    """A parsed MovieLens release in canonical form."""

    interactions: pd.DataFrame
    catalog: pd.DataFrame
    tags: pd.DataFrame | None = None


# --------------------------------------------------------------------------- layout detection


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _IGNORED_ENTRIES
    )


def _layout_of(folder: Path) -> str | None:
    """Return ``"csv"``/``"dat"`` if ``folder`` holds any MovieLens data file, else ``None``."""
    for layout, files in _LAYOUTS.items():
        if any((folder / files[kind]).is_file() for kind in _REQUIRED):
            return layout
    return None


def find_movielens_dir(path: Path) -> Path:
    """Return the folder that directly holds the MovieLens files.

    ``path`` may be that folder or a folder containing exactly one sub-folder with the files
    (the official zips extract into e.g. ``ml-latest-small/``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a directory or holds no recognisable MovieLens layout.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MovieLens folder does not exist: {path}")
    if not path.is_dir():
        raise ValueError(f"expected an extracted MovieLens folder, got a file: {path}")
    if _layout_of(path):
        return path
    entries = _visible_entries(path)
    subdirs = [p for p in entries if p.is_dir()]
    if len(subdirs) == 1 and _layout_of(subdirs[0]):
        return subdirs[0]
    found = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries) or "nothing"
    expected = " or ".join(f"{files['ratings']}+{files['movies']}" for files in _LAYOUTS.values())
    raise ValueError(f"unrecognised MovieLens layout in {path}: expected {expected}; found {found}")


def _required_files(folder: Path, layout: str) -> dict[str, Path]:
    files = {kind: folder / name for kind, name in _LAYOUTS[layout].items()}
    missing = [files[kind].name for kind in _REQUIRED if not files[kind].is_file()]
    if missing:
        looked_for = ", ".join(_LAYOUTS[layout][kind] for kind in _REQUIRED)
        raise FileNotFoundError(
            f"MovieLens folder {folder} is missing {', '.join(missing)} (looked for {looked_for})"
        )
    return files


# --------------------------------------------------------------------------- low-level parsing


def _read_table(
    source: Path | bytes,
    *,
    column_types: dict[str, pa.DataType],
    column_names: list[str] | None = None,
    delimiter: str = ",",
    quoted: bool = True,
) -> pa.Table:
    """Parse a delimited file (or in-memory bytes) with pyarrow; errors become ``ValueError``."""
    read_options = pacsv.ReadOptions(column_names=column_names) if column_names else pacsv.ReadOptions()
    parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False)
    convert_options = pacsv.ConvertOptions(column_types=column_types, include_columns=list(column_types))
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return pacsv.read_csv(
            stream, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise ValueError(f"cannot parse {name}: {exc}") from exc


def _read_csv(path: Path, column_types: dict[str, pa.DataType]) -> pa.Table:
    """Read an official MovieLens CSV, checking its header first for a clear error."""
    with path.open("rb") as fh:
        header = next(csv.reader([fh.readline().decode("utf-8-sig").strip()]), [])
    missing = [c for c in column_types if c not in header]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; header is {header}")
    return _read_table(path, column_types=column_types)


def _decode_text(raw: bytes, path: Path) -> bytes:
    """Return UTF-8 bytes for a file that is UTF-8 or latin-1 (as older releases are)."""
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        logger.debug("%s is not UTF-8; decoding as latin-1", path)
        return raw.decode("latin-1").encode("utf-8")


def _read_dat(path: Path, column_types: dict[str, pa.DataType], *, text: bool) -> pa.Table:
    """Read a headerless ``::``-separated file by rewriting ``::`` to an unused byte."""
    raw = path.read_bytes()
    if text:
        raw = _decode_text(raw, path)
    sep = next((s for s in _SEPARATORS if s not in raw), None)
    if sep is None:
        raise ValueError(f"cannot parse {path}: no free separator byte to replace '::'")
    return _read_table(
        raw.replace(b"::", sep),
        column_types=column_types,
        column_names=list(column_types),
        delimiter=sep.decode("ascii"),
        quoted=False,
    )


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


# --------------------------------------------------------------------------- per-file readers

_I64, _F64, _STR = pa.int64(), pa.float64(), pa.string()


def _read_ratings(path: Path, layout: str) -> pd.DataFrame:
    if layout == "csv":
        names = ("userId", "movieId", "rating", "timestamp")
        table = _read_csv(path, dict(zip(names, (_I64, _I64, _F64, _I64), strict=True)))
    else:
        names = ("UserID", "MovieID", "Rating", "Timestamp")
        table = _read_dat(path, dict(zip(names, (_I64, _I64, _F64, _I64), strict=True)), text=False)
    return canonical_interactions(*(_column(table, n) for n in names))


def _read_movies(path: Path, layout: str) -> pd.DataFrame:
    if layout == "csv":
        names = ("movieId", "title", "genres")
        table = _read_csv(path, dict(zip(names, (_I64, _STR, _STR), strict=True)))
    else:
        names = ("MovieID", "Title", "Genres")
        table = _read_dat(path, dict(zip(names, (_I64, _STR, _STR), strict=True)), text=True)
    item_id, title, genres = (table.column(n).to_pandas() for n in names)
    return canonical_catalog(item_id, title, genres)


def _read_tags(path: Path, layout: str) -> pd.DataFrame:
    if layout == "csv":
        names = ("userId", "movieId", "tag", "timestamp")
        table = _read_csv(path, dict(zip(names, (_I64, _I64, _STR, _I64), strict=True)))
    else:
        names = ("UserID", "MovieID", "Tag", "Timestamp")
        table = _read_dat(path, dict(zip(names, (_I64, _I64, _STR, _I64), strict=True)), text=True)
    users, user_rank = ids_to_str(_column(table, names[0]), "user_id")
    items, item_rank = ids_to_str(_column(table, names[1]), "item_id")
    tags = np.asarray(table.column(names[2]).to_pandas().fillna("").astype(str), dtype=object)
    ts = _column(table, names[3]).astype(np.int64)
    order = sort_order(ts, user_rank, item_rank)
    return pd.DataFrame(
        {"user_id": users[order], "item_id": items[order], "tag": tags[order], "timestamp": ts[order]},
        columns=list(TAG_COLUMNS),
        copy=False,
    )


# --------------------------------------------------------------------------- public API


def read_movielens(path: Path) -> MovieLensData:
    """Read an extracted MovieLens release into canonical frames.

    Args:
        path: the extracted folder, or a folder containing exactly one sub-folder with the
            files (as the official zips extract).

    Returns:
        ``MovieLensData`` with canonical ``interactions`` and ``catalog`` frames and a
        ``tags`` frame (user_id, item_id, tag, timestamp) or ``None`` if the release has none.

    Raises:
        FileNotFoundError: the folder or a required file (ratings/movies) is missing.
        ValueError: the layout is not recognised or a file cannot be parsed.
    """
    folder = find_movielens_dir(Path(path))
    layout = _layout_of(folder) or "csv"  # find_movielens_dir guarantees a layout
    files = _required_files(folder, layout)
    interactions = _read_ratings(files["ratings"], layout)
    catalog = _read_movies(files["movies"], layout)
    tags = _read_tags(files["tags"], layout) if files["tags"].is_file() else None
    logger.info(
        "read MovieLens (%s) from %s: %d ratings, %d movies, %s tags",
        layout,
        folder,
        len(interactions),
        len(catalog),
        "no" if tags is None else len(tags),
    )
    return MovieLensData(interactions=interactions, catalog=catalog, tags=tags)
