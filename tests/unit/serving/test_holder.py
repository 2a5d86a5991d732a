"""Hot reload: file sources, the swappable model reference, the poller, and swaps under concurrent requests."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import pytest
import torch

from recops.serving.holder import FileSource, ModelHolder, ModelLoadError, ModelPoller
from tests.unit.serving.conftest import api, loaded


def write(path: Path, payload: dict) -> str:
    torch.save(payload, path)
    return FileSource.digest(path.read_bytes())


def test_file_source_versions_follow_the_content(tmp_path: Path, payloads) -> None:
    path = tmp_path / "model.pt"
    source = FileSource(path)
    assert source.resolve() is None  # nothing to serve yet
    v1 = write(path, payloads["two_tower"])
    assert source.resolve() == v1 and v1.startswith("sha256:") and len(v1) == len("sha256:") + 12
    rec = source.load(v1)
    assert rec.version == v1 and rec.kind == "two_tower"
    v2 = write(path, payloads["sasrec"])
    assert v2 != v1 and source.resolve() == v2
    with pytest.raises(ModelLoadError, match="changed while loading"):
        source.load(v1)

    path.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match=r"model\.pt is not a loadable recops model\.pt"):
        source.load(source.resolve())


def test_poller_swaps_only_on_a_new_loadable_version(tmp_path: Path, payloads) -> None:
    path = tmp_path / "model.pt"
    holder = ModelHolder()
    poller = ModelPoller(holder, FileSource(path), poll_seconds=60)

    assert poller.poll_once() is False and holder.current is None
    assert "names no model yet" in poller.last_error

    v1 = write(path, payloads["two_tower"])
    assert poller.poll_once() is True
    first = holder.current
    assert first.version == v1 and first.recommender.version == v1 and first.source == str(path)
    assert poller.poll_once() is False and holder.current is first  # unchanged: nothing reloaded

    path.write_bytes(b"truncated upload")  # a broken new version: keep serving the old one
    assert poller.poll_once() is False
    assert holder.current is first and poller.failures == 1
    assert "could not load version sha256:" in poller.last_error

    v2 = write(path, payloads["sasrec"])
    assert poller.poll_once() is True
    assert holder.current.version == v2 and holder.current.recommender.kind == "sasrec"
    assert holder.swaps == 2 and poller.last_error is None


def test_poller_thread_picks_up_a_new_file(tmp_path: Path, payloads) -> None:
    path = tmp_path / "model.pt"
    v1 = write(path, payloads["two_tower"])
    holder = ModelHolder()
    poller = ModelPoller(holder, FileSource(path), poll_seconds=0.05)
    with pytest.raises(ValueError, match="poll_seconds=0 must be > 0"):
        ModelPoller(holder, FileSource(path), poll_seconds=0)
    poller.start()
    try:
        deadline = time.monotonic() + 20
        while (holder.current is None or holder.current.version != v1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.current.version == v1
        v2 = write(path, payloads["popularity"])
        while holder.current.version != v2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.current.version == v2 and holder.current.recommender.kind == "popularity"
    finally:
        poller.stop()
    assert poller.polls >= 2


def test_request_in_flight_finishes_on_the_model_it_started_with(payloads, monkeypatch) -> None:
    old, new = loaded(payloads["two_tower"], "1"), loaded(payloads["sasrec"], "2")
    expected_old = old.recommender.recommend_user("100", 5).item_ids
    inside, release = threading.Event(), threading.Event()
    real = old.recommender.recommend_user

    def held(*args, **kwargs):  # the old model's request pauses mid-computation until the swap is done
        inside.set()
        assert release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(old.recommender, "recommend_user", held)
    holder = ModelHolder(old)
    with api(holder) as client:
        result = {}
        thread = threading.Thread(target=lambda: result.update(
            resp=client.get("/v1/users/100/recommendations", params={"k": 5})))
        thread.start()
        assert inside.wait(20)
        holder.swap(new)  # while the request is inside the old model
        after = client.get("/v1/users/100/recommendations", params={"k": 5}).json()
        release.set()
        thread.join(20)
    body = result["resp"].json()
    assert body["model_version"] == "1" and result["resp"].headers["x-model-version"] == "1"
    assert [it["item_id"] for it in body["items"]] == expected_old
    assert after["model_version"] == "2"
    assert [it["item_id"] for it in after["items"]] == new.recommender.recommend_user("100", 5).item_ids


def test_swaps_under_concurrent_requests_never_mix_models(payloads) -> None:
    """Clients hammer the API while the served model flips between two versions: every answer is a 200
    and exactly the list the version it names computes."""
    models = {"1": loaded(payloads["two_tower"], "1"), "2": loaded(payloads["sasrec"], "2")}
    users = [str(100 + u) for u in range(8)]
    expected = {(v, u): m.recommender.recommend_user(u, 5).item_ids for v, m in models.items() for u in users}
    expected_session = {v: m.recommender.recommend_history(["m1", "m2"], 5).item_ids for v, m in models.items()}
    assert expected[("1", "100")] != expected[("2", "100")]  # the two versions answer differently
    holder = ModelHolder(models["1"])
    stop = threading.Event()
    errors: list[str] = []
    seen: dict[str, int] = {"1": 0, "2": 0}
    lock = threading.Lock()

    def hammer(client, n: int) -> None:
        i = 0
        while not stop.is_set():
            user = users[(n + i) % len(users)]
            i += 1
            if i % 3:
                resp = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
                key = None
            else:
                resp = client.post("/v1/recommendations", json={"item_ids": ["m1", "m2"], "k": 5})
                key = "session"
            if resp.status_code != 200:
                errors.append(f"HTTP {resp.status_code}: {resp.text}")
                continue
            body = resp.json()
            version = body["model_version"]
            want = expected_session[version] if key else expected[(version, user)]
            if [it["item_id"] for it in body["items"]] != want:
                errors.append(f"version {version} answered another model's list for {user}")
            with lock:
                seen[version] += 1

    with api(holder) as client:
        threads = [threading.Thread(target=hammer, args=(client, n)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            for flip in range(40):
                time.sleep(0.01)
                holder.swap(models["2" if flip % 2 == 0 else "1"])
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert errors == []
    assert seen["1"] > 0 and seen["2"] > 0
    assert holder.swaps == 40



def test_server_poller_freezes_the_gc_after_a_swap(tmp_path: Path, payloads) -> None:
    path = tmp_path / "model.pt"
    write(path, payloads["two_tower"])
    gc.unfreeze()
    try:
        assert ModelPoller(ModelHolder(), FileSource(path), 60).poll_once() is True
        assert gc.get_freeze_count() == 0  # off by default: tests and the serving check leave the GC alone
        assert ModelPoller(ModelHolder(), FileSource(path), 60, freeze_gc=True).poll_once() is True
        assert gc.get_freeze_count() > 0  # the model and the imports are out of the full collections' way
    finally:
        gc.unfreeze()
