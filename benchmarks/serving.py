"""Benchmark: HTTP serving latency and throughput of `recops serve` on loopback (GET top-k for users).

Usage: python benchmarks/serving.py [--model-file data/model/model.pt] [--users 6000] [--items 3500]
       [--rate 200] [--duration 10] [--repeats 3] [--concurrency 1,4,16,64] [--level-seconds 5]
       [--k 10] [--output benchmarks/results/serving.json]

Starts `python -m recops serve --model-file <model.pt>` in a subprocess (uvicorn, one process, the
`serving:` settings of params.yaml) on a free loopback port, waits for /readyz, warms it up, then drives
`GET /v1/users/{id}/recommendations?k=K` for random known users from this process with a small asyncio
HTTP/1.1 keep-alive client:

* open loop (`--repeats` runs): requests are scheduled at a fixed `--rate` for `--duration` seconds
  whether or not earlier ones have finished (up to 64 connections); latency is counted from the
  scheduled send time, so a stalled server shows up as queueing delay instead of being hidden (no
  coordinated omission); the target is judged on the median p99 of the runs;
* closed loop: `c` clients each send their next request as soon as the previous answer arrives, for each
  `c` in `--concurrency`, `--level-seconds` long; throughput is completed requests per second.

Every level is bounded in time and in requests (`--max-requests`). Without --model-file the model is a
randomly initialised two-tower of the ranking benchmark's shape (6,000 users x 3,500 items, dim 64,
histories of 20-200 items, all excluded from the answer). The load generator shares the machine with
the server: on 2 cores the figures include its CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from recops.benchmark import machine_info, write_result
from recops.models import TwoTowerConfig, build_model, checkpoint_payload

TARGET_RATE = 200
TARGET_P99_MS = 20.0
MAX_CONNECTIONS = 64


def synthetic_model(path: Path, n_users: int, n_items: int, dim: int, history_len: int, seed: int) -> None:
    """A model.pt as train writes it, with random weights: the cost of a request does not depend on them."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    hist_lengths = np.exp(rng.uniform(np.log(20), np.log(201), size=n_users)).astype(np.int64).clip(20, 200)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8  # popularity-skewed histories, as in ranking.py
    weights /= weights.sum()
    histories = [rng.choice(n_items, size=int(n), replace=False, p=weights).tolist() for n in hist_lengths]
    popularity = torch.bincount(torch.tensor([i for h in histories for i in h]), minlength=n_items).float()
    config = TwoTowerConfig(dim=dim, history_len=history_len)
    model = build_model(config, n_users, n_items, {"popularity": popularity}).eval()
    extra = {"user_ids": [str(u) for u in range(n_users)], "item_ids": [str(i) for i in range(n_items)],
             "user_histories": histories, "popularity": popularity}
    torch.save(checkpoint_payload(model, config, extra), path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"recops serve exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.2)
    sys.exit(f"recops serve was not ready within {timeout:.0f} s")


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing for uvicorn's answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def percentiles(latencies_s: list[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.asarray(latencies_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


class Load:
    def __init__(self, host: str, port: int, users: list[str], k: int, seed: int) -> None:
        self.host, self.port, self.k = host, port, k
        self.users = users
        self.rng = random.Random(seed)
        self.errors: list[str] = []
        self.checked = 0

    def next_request(self) -> bytes:
        user = self.rng.choice(self.users)
        return (f"GET /v1/users/{user}/recommendations?k={self.k} HTTP/1.1\r\n"
                f"Host: {self.host}\r\n\r\n").encode()

    def verify(self, status: int, body: bytes, i: int) -> bool:
        if status != 200:
            self.errors.append(f"HTTP {status}: {body[:200]!r}")
            return False
        if i % 50 == 0:  # spot-check the answers
            self.checked += 1
            if len(json.loads(body)["items"]) != self.k:
                self.errors.append(f"expected {self.k} items: {body[:200]!r}")
                return False
        return True

    async def open_loop(self, rate: float, duration: float, max_requests: int) -> dict:
        n = min(int(rate * duration), max_requests)
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(MAX_CONNECTIONS):
            pool.put_nowait(await Connection.open(self.host, self.port))
        latencies: list[float] = []
        loop = asyncio.get_running_loop()

        async def one(i: int, scheduled: float) -> None:
            conn = await pool.get()
            try:
                status, body = await conn.request(self.next_request())
                if self.verify(status, body, i):
                    latencies.append(loop.time() - scheduled)
            except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                self.errors.append(repr(err))
                conn = await Connection.open(self.host, self.port)
            finally:
                pool.put_nowait(conn)

        start = loop.time() + 0.05
        tasks = []
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
        while not pool.empty():
            pool.get_nowait().close()
        return {"mode": "open_loop", "target_rate": rate, "requests": n, "ok": len(latencies),
                "seconds": round(elapsed, 2), "throughput_rps": round(len(latencies) / elapsed, 1),
                **percentiles(latencies)}

    async def closed_loop(self, concurrency: int, seconds: float, max_requests: int) -> dict:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        sent = 0
        start = loop.time()
        deadline = start + seconds

        async def client() -> None:
            nonlocal sent
            conn = await Connection.open(self.host, self.port)
            try:
                while loop.time() < deadline and sent < max_requests:
                    sent += 1
                    t0 = loop.time()
                    try:
                        status, body = await conn.request(self.next_request())
                    except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                        self.errors.append(repr(err))
                        conn.close()
                        conn = await Connection.open(self.host, self.port)
                        continue
                    if self.verify(status, body, sent):
                        latencies.append(loop.time() - t0)
            finally:
                conn.close()

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = loop.time() - start
        return {"mode": "closed_loop", "concurrency": concurrency, "requests": sent, "ok": len(latencies),
                "seconds": round(elapsed, 2), "throughput_rps": round(len(latencies) / elapsed, 1),
                **percentiles(latencies)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", type=Path, help="a trained model.pt (default: a synthetic two-tower)")
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--items", type=int, default=3500)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--history-len", type=int, default=50)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="open-loop seconds")
    ap.add_argument("--repeats", type=int, default=3, help="open-loop runs (each --duration long)")
    ap.add_argument("--concurrency", default="1,4,16,64", help="closed-loop client counts, comma-separated")
    ap.add_argument("--level-seconds", type=float, default=5.0, help="seconds per closed-loop level")
    ap.add_argument("--max-requests", type=int, default=20000, help="cap per level")
    ap.add_argument("--warmup", type=int, default=300, help="requests sent first, not measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/serving.json"))
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if min(args.rate, args.duration, args.level_seconds, args.repeats, *levels) <= 0:
        ap.error("--rate, --duration, --repeats, --level-seconds and --concurrency must be positive")

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="recops-bench-serving-") as tmp:
        model_file = args.model_file
        if model_file is None:
            model_file = Path(tmp) / "model.pt"
            synthetic_model(model_file, args.users, args.items, args.dim, args.history_len, args.seed)
        payload = torch.load(model_file, map_location="cpu", weights_only=True)
        users = [str(u) for u in payload["extra"]["user_ids"]]
        lengths = [len(h) for h in payload["extra"]["user_histories"]]
        n_items = len(payload["extra"]["item_ids"])
        del payload

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "recops", "serve", "--model-file", str(model_file), "--host", "127.0.0.1",
             "--port", str(port)],
            env={**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ready = wait_ready(base, server)
            load = Load("127.0.0.1", port, users, args.k, args.seed)
            gc.collect()
            gc.freeze()  # keep this process's full collections short: they would show up as server latency

            async def run() -> list[dict]:
                await load.closed_loop(4, 60.0, args.warmup)  # warm-up, not reported
                load.errors.clear()
                out = [await load.open_loop(args.rate, args.duration, args.max_requests) for _ in range(args.repeats)]
                for c in levels:
                    out.append(await load.closed_loop(c, args.level_seconds, args.max_requests))
                return out

            results = asyncio.run(run())
        finally:
            server.terminate()
            try:
                _, err = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                _, err = server.communicate()

    if load.errors:
        sys.exit(f"{len(load.errors)} failed requests, e.g. {load.errors[:3]}\nserver log:\n{err.decode()[-3000:]}")
    open_loop = results[: args.repeats]
    open_p99 = float(np.median([r["p99_ms"] for r in open_loop]))
    result = {
        "benchmark": f"recops serve over HTTP on loopback: GET /v1/users/{{id}}/recommendations?k={args.k} "
                     "for random known users",
        "model": str(args.model_file) if args.model_file else
        f"synthetic two_tower (random weights), dim {args.dim}, history_len {args.history_len}",
        "model_kind": ready.get("model_kind"),
        "users": len(users),
        "items": n_items,
        "k": args.k,
        "history_items_excluded": {"min": min(lengths), "median": float(np.median(lengths)), "max": max(lengths)},
        "server": "python -m recops serve (uvicorn, 1 process, serving.torch_threads from params.yaml)",
        "client": "asyncio HTTP/1.1 keep-alive, in the benchmark process on the same machine",
        "levels": results,
        "answers_spot_checked": load.checked,
        "target": {"rate_rps": TARGET_RATE, "p99_ms": TARGET_P99_MS},
        "open_loop_p99_ms_median": round(open_p99, 2),
        "meets_target": bool(args.rate >= TARGET_RATE and open_p99 <= TARGET_P99_MS),
        "load_average_1_5_15min_at_start": load_at_start,
        **machine_info(),
    }
    write_result(result, args.output)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
