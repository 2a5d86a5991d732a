"""The lake on S3 when the network misbehaves: a fault-injecting HTTP proxy between recops and a real
S3 API (moto's server on loopback).

* transient server errors and a connection dropped in the middle of an upload are retried (with backoff)
  and the object ends up complete;
* a persistent failure ends in a clear error after a bounded number of attempts;
* a writer killed in the middle of an upload leaves no partial object and no committed partition
  visible to readers: they keep seeing nothing or the old objects, never half of a new one.

botocore's own retries are switched off (``AWS_MAX_ATTEMPTS=1``) so every retry counted here is one of
recops' (``recops.storage``) or s3fs's.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from recops.storage import MARKER, Partition, Storage

pytestmark = pytest.mark.integration

BUCKET = "recops-test"
P = Partition("raw", "interactions", dt.date(2024, 1, 1))
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


class FaultProxy:
    """HTTP proxy to ``target`` that can fail, cut or stall PUT requests whose path contains ``match``.

    ``fail``: answer the next N matching PUTs with 500 InternalError; ``cut``: read half of the next N
    matching uploads, then drop the connection; ``stall``: read half of the next matching upload, then
    wait until the test releases it (or the client goes away). ``puts`` records every matching PUT."""

    def __init__(self, target: str, match: str) -> None:
        url = urlsplit(target)
        self.target = (url.hostname, url.port)
        self.match = match
        self.fail = self.cut = 0
        self.stall = False
        self.puts: list[str] = []
        self.on_cut = None
        self.stalled, self.release = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, req: BaseHTTPRequestHandler) -> str:
        if req.command != "PUT" or self.match not in unquote(req.path):
            return "forward"
        with self.lock:
            if self.fail:
                self.fail -= 1
                outcome = "fail"
            elif self.cut:
                self.cut -= 1
                outcome = "cut"
            elif self.stall:
                self.stall = False
                outcome = "stall"
            else:
                outcome = "forward"
            self.puts.append(outcome)
            return outcome

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        outcome = self._decide(req)
        length = int(req.headers.get("Content-Length") or 0)
        if outcome in ("cut", "stall"):
            req.rfile.read(length // 2)
            if outcome == "cut" and self.on_cut is not None:
                self.on_cut(req.path)
            if outcome == "stall":
                self.stalled.set()
                self.release.wait(60)
            req.close_connection = True  # no answer: the upload is torn in the middle
            return
        body = req.rfile.read(length) if length else b""
        if outcome == "fail":
            payload = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                       b"<Message>injected transient failure</Message></Error>")
            req.send_response(500)
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(len(payload)))
            req.end_headers()
            req.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(*self.target, timeout=30)
        conn.putrequest(req.command, req.path, skip_host=True, skip_accept_encoding=True)
        for key, value in req.headers.items():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        res = conn.getresponse()
        data = res.read()
        req.send_response(res.status)
        for key, value in res.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)
        conn.close()


@pytest.fixture
def lake() -> str:
    """A fresh prefix: moto's servers in one process share their buckets."""
    return f"lake-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def proxy(s3_endpoint, lake, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore does not retry: what is counted is ours
    p = FaultProxy(s3_endpoint, match=f"/{lake}/")
    try:
        yield p
    finally:
        p.close()


def direct(s3_endpoint: str, lake: str) -> Storage:
    """The reader's view: straight to the S3 server, no proxy."""
    return Storage(f"s3://{BUCKET}/{lake}", s3_endpoint_url=s3_endpoint)


def through(proxy: FaultProxy, lake: str) -> Storage:
    return Storage(f"s3://{BUCKET}/{lake}", s3_endpoint_url=proxy.url)


def test_transient_server_errors_are_retried_until_the_write_succeeds(s3_endpoint, lake, proxy) -> None:
    proxy.fail = 2
    data = os.urandom(4096)
    s, reader = through(proxy, lake), direct(s3_endpoint, lake)
    s.write_bytes(s.path("state", "x.bin"), data)
    assert proxy.puts == ["fail", "fail", "forward"]
    assert reader.read_bytes(reader.path("state", "x.bin")) == data


def test_a_persistent_failure_gives_up_after_bounded_attempts(s3_endpoint, lake, proxy) -> None:
    proxy.fail = 100
    s = through(proxy, lake)
    with pytest.raises(OSError, match="injected transient failure"):
        s.write_bytes(s.path("state", "x.bin"), b"abc")
    assert proxy.puts == ["fail"] * 4  # recops.storage: 4 attempts with exponential backoff
    reader = direct(s3_endpoint, lake)
    assert not reader.exists(reader.path("state", "x.bin"))


def test_an_upload_cut_midway_is_never_visible_and_is_retried(s3_endpoint, lake, proxy) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    seen_during_cut: list[bool] = []

    def check(path: str) -> None:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{lake}/state/").get("KeyCount", 0)
        seen_during_cut.append(listed > 0)

    proxy.cut, proxy.on_cut = 1, check
    data = os.urandom(256 * 1024)
    s, reader = through(proxy, lake), direct(s3_endpoint, lake)
    s.write_bytes(s.path("state", "big.bin"), data)
    assert proxy.puts == ["cut", "forward"]
    assert seen_during_cut == [False]  # while torn: nothing under the key
    assert reader.read_bytes(reader.path("state", "big.bin")) == data


WRITER = """
import datetime as dt, json, sys
from recops.storage import Partition, Storage
s = Storage(sys.argv[1], s3_endpoint_url=sys.argv[2])
files = json.loads(sys.stdin.read())
s.write_partition(Partition("raw", "interactions", dt.date(2024, 1, 1)),
                  {name: bytes.fromhex(h) for name, h in files.items()})
print("committed")
"""


def test_a_writer_killed_midway_leaves_no_partial_object_nor_commit(s3_endpoint, lake, proxy) -> None:
    reader = direct(s3_endpoint, lake)
    old = {"a.parquet": b"old-a" * 100, "b.parquet": b"old-b" * 100}
    reader.write_partition(P, old)
    new = {"a.parquet": os.urandom(1024), "b.parquet": os.urandom(512 * 1024)}
    proxy.match = f"/{lake}/raw/interactions/date=2024-01-01/b.parquet"
    proxy.stall = True
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, f"s3://{BUCKET}/{lake}", proxy.url], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer.stdin.write(json.dumps({k: v.hex() for k, v in new.items()}))
    writer.stdin.close()
    try:
        assert proxy.stalled.wait(60), f"the writer never reached b.parquet: {writer.stderr.read()[-3000:]}"
        writer.send_signal(signal.SIGKILL)  # dies with half of b.parquet sent
        writer.wait(timeout=30)
    finally:
        proxy.release.set()
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == -signal.SIGKILL
    # readers: the partition is uncommitted (marker removed before the rewrite began) ...
    assert reader.manifest(P) is None
    assert reader.partition_dates("raw", "interactions") == []
    with pytest.raises(FileNotFoundError, match="no committed partition"):
        reader.read_partition(P)
    # ... and no object holds half of the new bytes: a.parquet is whole and new, b.parquet whole and old
    base = reader.partition_path(P)
    assert reader.read_bytes(f"{base}/a.parquet") == new["a.parquet"]
    assert reader.read_bytes(f"{base}/b.parquet") == old["b.parquet"]
    assert not reader.exists(f"{base}/{MARKER}")
    # a rerun commits the new partition whole
    proxy.match = "/nothing-to-match/"
    through(proxy, lake).write_partition(P, new)
    assert reader.read_partition(P) == new
