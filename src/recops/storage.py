"""Object storage for the lake: landing zone, accepted raw data, quarantine and state.

Everything is addressed by URL through fsspec: a local directory by default, or
``s3://bucket/prefix`` (s3fs) with the endpoint taken from the environment.

Layout::

    <root>/<area>/<dataset>/date=YYYY-MM-DD/<files...>
    <root>/<area>/<dataset>/date=YYYY-MM-DD/_SUCCESS      <- commit marker + manifest

A partition is visible to readers only once its ``_SUCCESS`` marker exists. Writers
remove the marker first, write every file atomically (temp file + rename locally; a
single PUT on S3, which is never visible half-written), then write the marker last.
A crash at any point leaves either the old committed partition or an uncommitted one
that readers ignore — never a half-written partition that looks complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

MARKER = "_SUCCESS"
AREAS = ("landing", "raw", "quarantine", "state")


def _is_transient(exc: BaseException) -> bool:
    """Retry network-ish failures, never 'not found' or permission problems."""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


_retry = retry(
    retry=retry_if_exception(_is_transient),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.2, max=5),
    reraise=True,
)


def atomic_write_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a local file so that readers see the old content or the new one, never a part: a unique temp
    file in the same folder, flushed to disk, then renamed over ``path`` (the temp file never outlives a
    failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, fixed separators, trailing newline)."""
    return (json.dumps(obj, sort_keys=True, indent=1, default=str) + "\n").encode()


@dataclass(frozen=True)
class Partition:
    area: str
    dataset: str
    date: dt.date

    @property
    def key(self) -> str:
        return f"{self.area}/{self.dataset}/date={self.date.isoformat()}"


class Storage:
    """A lake rooted at a URL. Thin adapter over an fsspec filesystem."""

    def __init__(self, url: str, *, s3_endpoint_url: str | None = None) -> None:
        options: dict[str, Any] = {}
        if url.startswith("s3://") and s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        self.root = self.root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def uri(self, *parts: str) -> str:
        """Human-facing URL of a path (for messages and manifests)."""
        rel = "/".join(p.strip("/") for p in parts if p)
        return f"{self.url}/{rel}" if rel else self.url

    # ------------------------------------------------------------------ files
    @_retry
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole object atomically."""
        parent = path.rsplit("/", 1)[0]
        if self.is_local:
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, path)  # os.rename: atomic on one filesystem
        else:
            self.fs.pipe_file(path, data)  # one PUT: readers see all of it or nothing

    @_retry
    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    @_retry
    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    @_retry
    def delete(self, path: str, recursive: bool = False) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)

    def ls(self, path: str) -> list[str]:
        try:
            return sorted(self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ partitions
    def partition_path(self, p: Partition) -> str:
        return self.path(p.key)

    def write_partition(
        self, p: Partition, files: Mapping[str, bytes], meta: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Replace a partition with ``files`` and commit it. Returns the manifest.

        The manifest holds no wall-clock time, so writing the same content twice
        gives byte-identical objects.
        """
        base = self.partition_path(p)
        self.delete(f"{base}/{MARKER}")  # uncommit first: readers stop seeing the old version
        for existing in self.ls(base):
            name = existing.rsplit("/", 1)[-1]
            if name not in files:
                self.delete(existing, recursive=True)
        manifest: dict[str, Any] = {"partition": p.key, "files": {}, **(meta or {})}
        for name, data in sorted(files.items()):
            self.write_bytes(f"{base}/{name}", data)
            manifest["files"][name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
        self.write_bytes(f"{base}/{MARKER}", canonical_json(manifest))
        log.debug("committed %s (%d files)", self.uri(p.key), len(files))
        return manifest

    def manifest(self, p: Partition) -> dict[str, Any] | None:
        """The commit manifest, or None when the partition is absent or uncommitted."""
        try:
            return json.loads(self.read_bytes(f"{self.partition_path(p)}/{MARKER}"))
        except FileNotFoundError:
            return None

    def read_partition(self, p: Partition) -> dict[str, bytes]:
        """All files of a committed partition (raises FileNotFoundError if uncommitted)."""
        if self.manifest(p) is None:
            raise FileNotFoundError(f"no committed partition at {self.uri(p.key)}")
        base = self.partition_path(p)
        out: dict[str, bytes] = {}
        for path in self.ls(base):
            name = path.rsplit("/", 1)[-1]
            if name != MARKER and not name.startswith(".tmp-"):
                out[name] = self.read_bytes(path)
        return out

    def list_files(self, p: Partition) -> list[str]:
        """Names of data files in a partition, committed or not (for producers' drops)."""
        return [
            path.rsplit("/", 1)[-1]
            for path in self.ls(self.partition_path(p))
            if not path.rsplit("/", 1)[-1].startswith((".tmp-", MARKER))
        ]

    def partition_dates(self, area: str, dataset: str, committed_only: bool = True) -> list[dt.date]:
        dates = []
        for path in self.ls(self.path(area, dataset)):
            name = path.rsplit("/", 1)[-1]
            if not name.startswith("date="):
                continue
            try:
                d = dt.date.fromisoformat(name[5:])
            except ValueError:
                log.warning("ignoring malformed partition name %s", self.uri(area, dataset, name))
                continue
            if not committed_only or self.exists(f"{path}/{MARKER}"):
                dates.append(d)
        return sorted(dates)

    def delete_partition(self, p: Partition) -> None:
        base = self.partition_path(p)
        self.delete(f"{base}/{MARKER}")
        self.delete(base, recursive=True)
