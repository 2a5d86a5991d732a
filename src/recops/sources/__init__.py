"""Data sources: MovieLens releases, their download, and generic event logs."""

from recops.sources.download import ChecksumError, ChecksumUnavailableError, fetch_movielens
from recops.sources.eventlog import (
    CATALOG_COLUMNS,
    INTERACTION_COLUMNS,
    canonical_catalog,
    canonical_interactions,
    read_catalog,
    read_event_log,
)
from recops.sources.movielens import TAG_COLUMNS, MovieLensData, find_movielens_dir, read_movielens

__all__ = [
    "CATALOG_COLUMNS",
    "INTERACTION_COLUMNS",
    "TAG_COLUMNS",
    "ChecksumError",
    "ChecksumUnavailableError",
    "MovieLensData",
    "canonical_catalog",
    "canonical_interactions",
    "fetch_movielens",
    "find_movielens_dir",
    "read_catalog",
    "read_event_log",
    "read_movielens",
]
