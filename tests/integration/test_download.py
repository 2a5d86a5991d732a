"""End-to-end tests of fetch_movielens against a loopback HTTP server serving the real
ml-latest-small release (zipped in tmp from the shared dataset folder)."""

from __future__ import annotations

import hashlib
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from recops.sources import ChecksumError, ChecksumUnavailableError, fetch_movielens, read_movielens

pytestmark = pytest.mark.integration

DATASET = "ml-latest-small"
SHARED_DATASET = Path(__file__).resolve().parents[2].parent / "shared/datasets" / DATASET
FAST = {"attempts": 3, "backoff_s": 0.0, "timeout": 10}


@dataclass
class Release:
    zip_path: Path
    data: bytes
    md5: str
    sha256: str


@dataclass
class FakeServer:
    """Serves ``routes`` (path -> body, or an int status); records every request path."""

    url: str = ""
    routes: dict[str, bytes | int] = field(default_factory=dict)
    failures: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to send first
    hits: list[str] = field(default_factory=list)


def _build_zip(source: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for file in sorted(source.iterdir()):
            archive.write(file, f"{DATASET}/{file.name}")
    return dest


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    if not (SHARED_DATASET / "ratings.csv").is_file():
        pytest.fail(f"shared dataset missing: {SHARED_DATASET} (expected the extracted {DATASET} release)")
    zip_path = _build_zip(SHARED_DATASET, tmp_path_factory.mktemp("release") / f"{DATASET}.zip")
    data = zip_path.read_bytes()
    return Release(zip_path, data, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())


@pytest.fixture
def server(release: Release) -> Iterator[FakeServer]:
    state = FakeServer()
    state.routes = {
        f"/{DATASET}.zip": release.data,
        # GroupLens style sidecar ("<HEX>  <file>"), uppercase to exercise normalisation
        f"/{DATASET}.zip.md5": f"{release.md5.upper()}  {DATASET}.zip\n".encode(),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            state.hits.append(self.path)
            pending = state.failures.get(self.path)
            body = state.routes.get(self.path, 404) if not pending else pending.pop(0)
            if isinstance(body, int):
                self.send_error(body)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _assert_full_release(folder: Path) -> None:
    data = read_movielens(folder)
    assert len(data.interactions) == 100836
    assert data.interactions["user_id"].nunique() == 610
    assert len(data.catalog) == 9742
    assert data.tags is not None and len(data.tags) == 3683


def test_download_with_md5_sidecar_then_cache_hit(server: FakeServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    folder = fetch_movielens(DATASET, cache, base_url=server.url, **FAST)

    assert folder == cache / DATASET
    assert (folder / ".complete").is_file()
    assert _cache_entries(cache) == [DATASET]  # no zip, no temp files left behind
    assert sorted(server.hits) == [f"/{DATASET}.zip", f"/{DATASET}.zip.md5"]
    _assert_full_release(folder)

    again = fetch_movielens(DATASET, cache, base_url=server.url, **FAST)
    assert again == folder
    assert len(server.hits) == 2  # served from the cache: no new requests


def test_corrupted_download_raises_and_leaves_nothing(
    server: FakeServer, release: Release, tmp_path: Path
) -> None:
    corrupted = bytearray(release.data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.routes[f"/{DATASET}.zip"] = bytes(corrupted)
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumError) as excinfo:
        fetch_movielens(DATASET, cache, base_url=server.url, **FAST)

    message = str(excinfo.value)
    assert DATASET in message
    assert release.md5 in message
    assert hashlib.md5(corrupted).hexdigest() in message
    assert _cache_entries(cache) == []


def test_wrong_sidecar_raises_and_leaves_nothing(server: FakeServer, tmp_path: Path) -> None:
    server.routes[f"/{DATASET}.zip.md5"] = b"0123456789abcdef0123456789abcdef\n"
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumError, match="0123456789abcdef0123456789abcdef"):
        fetch_movielens(DATASET, cache, base_url=server.url, **FAST)
    assert _cache_entries(cache) == []


def test_pinned_sha256_needs_no_sidecar(server: FakeServer, release: Release, tmp_path: Path) -> None:
    del server.routes[f"/{DATASET}.zip.md5"]
    cache = tmp_path / "cache"

    folder = fetch_movielens(DATASET, cache, base_url=server.url, checksum=f"sha256:{release.sha256}", **FAST)

    assert server.hits == [f"/{DATASET}.zip"]
    _assert_full_release(folder)


def test_wrong_pin_raises(server: FakeServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="sha256:" + "0" * 64):
        fetch_movielens(DATASET, cache, base_url=server.url, checksum="sha256:" + "0" * 64, **FAST)
    assert _cache_entries(cache) == []


def test_no_pin_and_no_sidecar_is_refused(server: FakeServer, tmp_path: Path) -> None:
    del server.routes[f"/{DATASET}.zip.md5"]
    cache = tmp_path / "cache"

    with pytest.raises(ChecksumUnavailableError, match="no checksum pinned"):
        fetch_movielens(DATASET, cache, base_url=server.url, **FAST)
    assert f"/{DATASET}.zip" not in server.hits  # refused before downloading
    assert _cache_entries(cache) == []


def test_transient_server_errors_are_retried(server: FakeServer, tmp_path: Path) -> None:
    server.failures = {f"/{DATASET}.zip": [503, 502], f"/{DATASET}.zip.md5": [500]}

    folder = fetch_movielens(DATASET, tmp_path / "cache", base_url=server.url, **FAST)

    assert server.hits.count(f"/{DATASET}.zip") == 3
    assert server.hits.count(f"/{DATASET}.zip.md5") == 2
    assert (folder / "ratings.csv").is_file()


def test_persistent_server_errors_give_up(server: FakeServer, tmp_path: Path) -> None:
    server.failures = {f"/{DATASET}.zip": [503, 503, 503]}
    cache = tmp_path / "cache"
    with pytest.raises(requests.HTTPError):
        fetch_movielens(DATASET, cache, base_url=server.url, **FAST)
    assert server.hits.count(f"/{DATASET}.zip") == 3
    assert _cache_entries(cache) == []


def test_connection_errors_are_retried_then_raised(tmp_path: Path) -> None:
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(requests.ConnectionError):
            fetch_movielens(DATASET, tmp_path / "cache", base_url=url, checksum="md5:" + "0" * 32, **FAST)
    assert _cache_entries(tmp_path / "cache") == []


def test_mirror_directory_is_used_in_place(server: FakeServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    assert fetch_movielens(DATASET, cache, base_url=server.url, mirror=str(SHARED_DATASET)) == SHARED_DATASET
    # a mirror root holding one sub-folder per dataset
    assert (
        fetch_movielens(DATASET, cache, base_url=server.url, mirror=str(SHARED_DATASET.parent))
        == SHARED_DATASET
    )
    assert server.hits == []
    assert not cache.exists()  # nothing copied


def test_mirror_zip_file_and_zip_folder(server: FakeServer, release: Release, tmp_path: Path) -> None:
    folder = fetch_movielens(
        DATASET,
        tmp_path / "c1",
        base_url=server.url,
        mirror=str(release.zip_path),
        checksum=f"md5:{release.md5}",
    )
    _assert_full_release(folder)

    # a folder holding <dataset>.zip and a local .md5 sidecar
    (release.zip_path.parent / f"{DATASET}.zip.md5").write_text(release.md5)
    folder = fetch_movielens(
        DATASET, tmp_path / "c2", base_url=server.url, mirror=str(release.zip_path.parent)
    )
    assert folder == tmp_path / "c2" / DATASET
    assert (folder / "movies.csv").is_file()

    with pytest.raises(ChecksumError):
        fetch_movielens(
            DATASET,
            tmp_path / "c3",
            base_url=server.url,
            mirror=str(release.zip_path),
            checksum="md5:" + "f" * 32,
        )
    assert release.zip_path.is_file()  # a mirror's file is never deleted
    assert _cache_entries(tmp_path / "c3") == []
    assert server.hits == []


def test_mirror_base_url(server: FakeServer, tmp_path: Path) -> None:
    folder = fetch_movielens(
        DATASET,
        tmp_path / "cache",
        base_url="http://127.0.0.1:9/unreachable",
        mirror=server.url + "/",
        **FAST,
    )
    assert sorted(server.hits) == [f"/{DATASET}.zip", f"/{DATASET}.zip.md5"]
    assert (folder / "ratings.csv").is_file()


def test_unusable_mirror_is_an_error(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        fetch_movielens(DATASET, tmp_path / "cache", base_url=server.url, mirror=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds neither"):
        fetch_movielens(DATASET, tmp_path / "cache", base_url=server.url, mirror=str(tmp_path / "empty"))
    # a mirror root whose only sub-folder is another release must not be mistaken for this one
    other = tmp_path / "root" / "ml-1m"
    other.mkdir(parents=True)
    (other / "ratings.dat").write_text("1::1::5::1\n")
    with pytest.raises(ValueError, match="holds neither"):
        fetch_movielens(DATASET, tmp_path / "cache", base_url=server.url, mirror=str(tmp_path / "root"))
    assert server.hits == []


def test_zip_slip_is_rejected(server: FakeServer, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(f"{DATASET}/ratings.csv", "userId,movieId,rating,timestamp\n")
        archive.writestr("../escaped.txt", "pwned")
    data = evil.read_bytes()
    server.routes[f"/{DATASET}.zip"] = data
    cache = tmp_path / "sub" / "cache"

    with pytest.raises(ValueError, match="unsafe zip member"):
        fetch_movielens(
            DATASET, cache, base_url=server.url, checksum=f"sha256:{hashlib.sha256(data).hexdigest()}", **FAST
        )
    assert _cache_entries(cache) == []
    assert not (tmp_path / "sub" / "escaped.txt").exists()
