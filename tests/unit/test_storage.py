import datetime as dt
from pathlib import Path

import pytest

from recops.storage import MARKER, Partition, Storage

P = Partition("landing", "interactions", dt.date(2024, 1, 1))


def test_partition_roundtrip_and_listing(tmp_path: Path) -> None:
    s = Storage(str(tmp_path / "lake"))
    m = s.write_partition(P, {"a.parquet": b"x" * 10}, {"rows": 3})
    assert m["rows"] == 3 and m["files"]["a.parquet"]["bytes"] == 10
    assert s.read_partition(P) == {"a.parquet": b"x" * 10}
    assert s.partition_dates("landing", "interactions") == [dt.date(2024, 1, 1)]


def test_rewrite_is_byte_identical_and_drops_stale_files(tmp_path: Path) -> None:
    s = Storage(str(tmp_path))
    s.write_partition(P, {"a": b"1", "b": b"2"})
    first = (tmp_path / P.key / MARKER).read_bytes()
    s.write_partition(P, {"a": b"1"})
    s.write_partition(P, {"a": b"1", "b": b"2"})
    assert (tmp_path / P.key / MARKER).read_bytes() == first
    s.write_partition(P, {"a": b"1"})
    assert sorted(p.name for p in (tmp_path / P.key).iterdir()) == [MARKER, "a"]


def test_crash_mid_write_leaves_no_visible_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Storage(str(tmp_path))
    s.write_partition(P, {"a": b"old", "b": b"old"})
    real = Storage.write_bytes
    calls = {"n": 0}

    def crash_on_second_file(self, path, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(self, path, data)

    monkeypatch.setattr(Storage, "write_bytes", crash_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        s.write_partition(P, {"a": b"new", "b": b"new"})
    monkeypatch.setattr(Storage, "write_bytes", real)
    # half-new, half-old content exists on disk but is not visible to readers
    assert s.manifest(P) is None
    assert s.partition_dates("landing", "interactions") == []
    with pytest.raises(FileNotFoundError, match="no committed partition"):
        s.read_partition(P)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_atomic_file_write_leaves_no_temp_files(tmp_path: Path) -> None:
    s = Storage(str(tmp_path))
    s.write_bytes(s.path("state", "x.bin"), b"abc")
    assert (tmp_path / "state" / "x.bin").read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["x.bin"]


def test_malformed_partition_names_are_ignored(tmp_path: Path) -> None:
    s = Storage(str(tmp_path))
    (tmp_path / "raw" / "interactions" / "date=garbage").mkdir(parents=True)
    (tmp_path / "raw" / "interactions" / "date=2024-01-02").mkdir(parents=True)  # uncommitted
    assert s.partition_dates("raw", "interactions") == []
    assert s.partition_dates("raw", "interactions", committed_only=False) == [dt.date(2024, 1, 2)]


def test_s3_url_uses_endpoint_from_environment() -> None:
    s = Storage("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:1")
    assert s.root == "bucket/prefix"
    assert not s.is_local
    assert s.fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:1"


def test_atomic_write_file_replaces_whole_files_and_leaves_no_temp(tmp_path):
    from recops.storage import atomic_write_file

    target = tmp_path / "reports" / "x.json"
    assert atomic_write_file(target, b"old") == target
    atomic_write_file(target, b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(TypeError):
        atomic_write_file(target, "not bytes")  # fails while writing the temp file
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
