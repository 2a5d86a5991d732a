"""Download, verify and extract MovieLens releases into a local cache.

Resolution order in :func:`fetch_movielens`:

1. ``mirror`` is a directory holding the dataset's files (directly or in ``<mirror>/<dataset>/``)
   -> that folder is returned as is (nothing copied).
2. The cache already holds ``<cache_dir>/<dataset>/.complete`` -> the cached folder is returned.
3. ``mirror`` is a ``.zip`` file or a directory holding ``<dataset>.zip`` -> verify and extract.
4. Otherwise download ``<base>/<dataset>.zip`` where ``<base>`` is ``mirror`` when it is an
   ``http(s)://`` URL, else ``base_url``; verify it against the pinned ``checksum`` or the
   official ``<dataset>.zip.md5`` sidecar, then extract.

Everything lands in the cache atomically (temp file/dir + ``os.replace``), and a file that
fails verification is deleted, so the cache never holds a partial or corrupt dataset.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TypeVar

import requests
import tenacity
from tqdm import tqdm

from recops.sources.movielens import find_movielens_dir

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
_CHUNK_SIZE = 1 << 20
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX_LENGTHS = {"md5": 32, "sha256": 64}
_MD5_IN_SIDECAR = re.compile(r"\b([0-9a-fA-F]{32})\b")

T = TypeVar("T")


class ChecksumError(ValueError):
    """A downloaded or mirrored archive does not match its expected digest."""

    def __init__(self, message: str, *, dataset: str, expected: str | None = None, actual: str | None = None):
        super().__init__(message)
        self.dataset = dataset
        self.expected = expected
        self.actual = actual


class ChecksumUnavailableError(ChecksumError):
    """Neither a pinned checksum nor a published ``.md5`` sidecar is available."""


@dataclass(frozen=True)
class Digest:
    """An expected digest, e.g. ``Digest("sha256", "ab12...")``."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``"sha256:<hex>"`` or ``"md5:<hex>"`` (hex is case-insensitive)."""
        algorithm, sep, hexdigest = text.strip().partition(":")
        algorithm, hexdigest = algorithm.lower(), hexdigest.lower()
        expected_len = _HEX_LENGTHS.get(algorithm)
        if (
            not sep
            or expected_len is None
            or len(hexdigest) != expected_len
            or not re.fullmatch(r"[0-9a-f]+", hexdigest)
        ):
            raise ValueError(f"invalid checksum {text!r}; expected 'sha256:<64 hex>' or 'md5:<32 hex>'")
        return cls(algorithm, hexdigest)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def parse_md5_sidecar(text: str) -> str:
    """Extract the md5 hex digest from a sidecar (``"<hex>  <file>"``, ``"<hex>"``, BSD style)."""
    match = _MD5_IN_SIDECAR.search(text)
    if match is None:
        raise ValueError(f"no md5 digest found in sidecar text {text[:80]!r}")
    return match.group(1).lower()


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, streamed in 1 MiB chunks."""
    hasher = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK_SIZE), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _verify(path: Path, expected: Digest, dataset: str) -> None:
    """Raise ``ChecksumError`` (after deleting ``path``) if ``path`` does not match ``expected``."""
    actual = file_digest(path, expected.algorithm)
    if actual != expected.hexdigest:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for dataset {dataset!r}: expected {expected}, "
            f"got {expected.algorithm}:{actual}; the corrupt file was deleted",
            dataset=dataset,
            expected=str(expected),
            actual=f"{expected.algorithm}:{actual}",
        )
    logger.info("verified %s for %s", expected.algorithm, dataset)


# --------------------------------------------------------------------------- HTTP with retries


def _is_transient(exc: BaseException) -> bool:
    """Connection problems, timeouts, truncated bodies, 5xx and 429 are worth retrying."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(
        exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
    )


def _with_retries(func: Callable[[], T], *, attempts: int, backoff_s: float) -> T:
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_exponential(multiplier=backoff_s, max=max(backoff_s * 8, 0.0)),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=lambda state: logger.warning(
            "transient error (attempt %d/%d): %s", state.attempt_number, attempts, state.outcome.exception()
        ),
        reraise=True,
    )
    return retrying(func)


def _fetch_sidecar_md5(url: str, *, timeout: float, attempts: int, backoff_s: float) -> str | None:
    """Return the md5 published at ``url``, or ``None`` if the server has none (404/403/410)."""

    def get() -> requests.Response:
        response = requests.get(url, timeout=timeout)
        if response.status_code in (403, 404, 410):
            return response
        response.raise_for_status()
        return response

    response = _with_retries(get, attempts=attempts, backoff_s=backoff_s)
    if response.status_code != 200:
        logger.info("no checksum sidecar at %s (HTTP %d)", url, response.status_code)
        return None
    return parse_md5_sidecar(response.text)


def _download_once(url: str, dest_dir: Path, *, timeout: float, desc: str) -> Path:
    """Stream ``url`` into a new temp file in ``dest_dir``; the temp file is removed on error."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{desc}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=desc, disable=not sys.stderr.isatty()
            ) as progress:
                for chunk in response.iter_content(chunk_size=_CHUNK_SIZE):
                    out.write(chunk)
                    progress.update(len(chunk))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# --------------------------------------------------------------------------- extraction


def _check_member(name: str, root: Path) -> None:
    """Reject zip members that would be written outside ``root`` (zip-slip)."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    target = (root / name).resolve()
    if (
        posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
        or not target.is_relative_to(root.resolve())
    ):
        raise ValueError(f"refusing to extract unsafe zip member {name!r}")


def _extracted_root(folder: Path) -> Path:
    """Descend into the single top-level folder most release zips contain."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _extract_into_cache(zip_path: Path, target: Path) -> Path:
    """Extract ``zip_path`` to a temp dir beside ``target``, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.namelist():
                _check_member(member, tmp)
            archive.extractall(tmp)
        root = _extracted_root(tmp)
        (root / COMPLETE_MARKER).touch()
        if target.exists():  # stale, incomplete extraction from an earlier crash
            shutil.rmtree(target)
        try:
            os.replace(root, target)
        except OSError:
            if not _is_complete(target):  # lost a race against another process: fine
                raise
            logger.info("%s was extracted concurrently; using it", target)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{zip_path} is not a valid zip archive: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


# --------------------------------------------------------------------------- mirrors


def _mirror_folder(mirror: Path, dataset: str) -> Path | None:
    """Return the folder of ``mirror`` holding the dataset's extracted files, if any."""
    for candidate in (mirror / dataset, mirror):
        if not candidate.is_dir():
            continue
        try:
            folder = find_movielens_dir(candidate)
        except ValueError:
            continue
        if candidate == mirror:
            if folder != mirror:  # a lone sub-folder named otherwise may be another dataset
                continue
            if mirror.name != dataset:
                logger.warning(
                    "mirror %s holds MovieLens files directly; assuming they are %s", mirror, dataset
                )
        return folder
    return None


def _mirror_zip(mirror: Path, dataset: str) -> Path | None:
    if mirror.is_file() and mirror.suffix.lower() == ".zip":
        return mirror
    candidate = mirror / f"{dataset}.zip"
    return candidate if mirror.is_dir() and candidate.is_file() else None


def _local_expected_digest(zip_path: Path, pinned: Digest | None, dataset: str) -> Digest | None:
    """Pinned digest, else a local ``<zip>.md5`` sidecar, else ``None`` (trusted local mirror)."""
    if pinned is not None:
        return pinned
    sidecar = zip_path.with_name(zip_path.name + ".md5")
    if sidecar.is_file():
        return Digest("md5", parse_md5_sidecar(sidecar.read_text(errors="replace")))
    logger.warning("no checksum for local mirror archive %s of %s; not verified", zip_path, dataset)
    return None


def _extract_local_zip(zip_path: Path, target: Path, pinned: Digest | None, dataset: str) -> Path:
    expected = _local_expected_digest(zip_path, pinned, dataset)
    if expected is not None:
        actual = file_digest(zip_path, expected.algorithm)
        if actual != expected.hexdigest:  # never delete the user's mirror file
            raise ChecksumError(
                f"checksum mismatch for dataset {dataset!r} in mirror {zip_path}: expected {expected}, "
                f"got {expected.algorithm}:{actual}",
                dataset=dataset,
                expected=str(expected),
                actual=f"{expected.algorithm}:{actual}",
            )
    logger.info("extracting %s from mirror %s", dataset, zip_path)
    return _extract_into_cache(zip_path, target)


# --------------------------------------------------------------------------- download path


def _expected_digest(
    base: str, dataset: str, pinned: Digest | None, *, timeout: float, attempts: int, backoff_s: float
) -> Digest:
    if pinned is not None:
        return pinned
    sidecar_url = f"{base}/{dataset}.zip.md5"
    md5 = _fetch_sidecar_md5(sidecar_url, timeout=timeout, attempts=attempts, backoff_s=backoff_s)
    if md5 is None:
        raise ChecksumUnavailableError(
            f"cannot verify dataset {dataset!r}: no checksum pinned and no sidecar at {sidecar_url}; "
            "pass checksum='sha256:<hex>' (or 'md5:<hex>')",
            dataset=dataset,
        )
    return Digest("md5", md5)


def _download_verified(
    url: str,
    cache_dir: Path,
    dataset: str,
    expected: Digest,
    *,
    timeout: float,
    attempts: int,
    backoff_s: float,
) -> Path:
    """Download ``url``, verify it and atomically move it to ``<cache_dir>/<dataset>.zip``."""
    logger.info("downloading %s", url)
    tmp = _with_retries(
        lambda: _download_once(url, cache_dir, timeout=timeout, desc=dataset),
        attempts=attempts,
        backoff_s=backoff_s,
    )
    _verify(tmp, expected, dataset)
    final = cache_dir / f"{dataset}.zip"
    os.replace(tmp, final)
    return final


def fetch_movielens(
    dataset: str,
    cache_dir: Path,
    *,
    base_url: str,
    mirror: str | None = None,
    checksum: str | None = None,
    timeout: float = 60,
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> Path:
    """Return a local folder holding the extracted files of MovieLens ``dataset``.

    Args:
        dataset: release name, e.g. ``"ml-latest-small"`` or ``"ml-25m"``.
        cache_dir: where archives are downloaded and extracted (``<cache_dir>/<dataset>/``).
        base_url: where ``<dataset>.zip`` and ``<dataset>.zip.md5`` are published.
        mirror: usually ``$RECOPS_DATA_MIRROR``: a directory with the extracted files (or a
            ``<dataset>`` sub-folder, or ``<dataset>.zip``), a zip file, or an http(s) base URL.
        checksum: pinned ``"sha256:<hex>"`` or ``"md5:<hex>"``; without it the md5 sidecar
            is fetched and verification fails if there is none.
        timeout: per-request timeout in seconds.
        attempts: HTTP attempts for transient failures (connection errors, 5xx, 429).
        backoff_s: multiplier for exponential backoff between attempts.

    Raises:
        ChecksumError: the archive does not match (the downloaded file is deleted).
        ChecksumUnavailableError: no pinned checksum and no sidecar to verify against.
        ValueError: bad arguments, unusable mirror, invalid or unsafe archive.
        requests.RequestException: HTTP failures that persisted after retries.
    """
    if not _DATASET_NAME.match(dataset):
        raise ValueError(f"invalid dataset name {dataset!r}")
    pinned = Digest.parse(checksum) if checksum else None
    base = base_url
    mirror_path: Path | None = None
    if mirror:
        if mirror.startswith(("http://", "https://")):
            base = mirror
        else:
            mirror_path = Path(mirror).expanduser()
            if not mirror_path.exists():
                raise ValueError(f"data mirror {mirror!r} does not exist (neither a path nor an http(s) URL)")
            folder = _mirror_folder(mirror_path, dataset)
            if folder is not None:
                logger.info("using mirrored %s at %s", dataset, folder)
                return folder

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / dataset
    if _is_complete(target):
        logger.info("using cached %s at %s", dataset, target)
        return target

    if mirror_path is not None:
        zip_path = _mirror_zip(mirror_path, dataset)
        if zip_path is None:
            raise ValueError(
                f"data mirror {mirror_path} holds neither the files of {dataset!r} "
                f"(directly or in {dataset}/) nor {dataset}.zip"
            )
        return _extract_local_zip(zip_path, target, pinned, dataset)

    base = base.rstrip("/")
    expected = _expected_digest(
        base, dataset, pinned, timeout=timeout, attempts=attempts, backoff_s=backoff_s
    )
    archive = _download_verified(
        f"{base}/{dataset}.zip",
        cache_dir,
        dataset,
        expected,
        timeout=timeout,
        attempts=attempts,
        backoff_s=backoff_s,
    )
    try:
        return _extract_into_cache(archive, target)
    finally:
        archive.unlink(missing_ok=True)
