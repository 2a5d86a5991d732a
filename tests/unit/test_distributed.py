"""Data-parallel helpers: the torchrun environment, batch sharding, and DDP in-process with one rank.

The real ``torchrun`` launches are in ``tests/integration/test_torchrun.py``."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from recops import distributed
from recops.dataset import FeatureData
from recops.distributed import DistributedError, World
from recops.models import SASRecConfig
from recops.models.batching import make_batches
from tests.unit.test_train import assert_same_weights, feature_set, run, strip_timing


def test_world_from_environ() -> None:
    assert World.from_environ({}) == World(rank=0, local_rank=0, size=1, launched=False)
    world = World.from_environ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (world.rank, world.local_rank, world.size, world.launched, world.is_main) == (2, 0, 4, True, False)
    assert World.from_environ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}).is_main
    with pytest.raises(DistributedError, match="RANK=4"):
        World.from_environ({"WORLD_SIZE": "4", "RANK": "4", "LOCAL_RANK": "0"})
    with pytest.raises(DistributedError, match="must be integers.*WORLD_SIZE='two'"):
        World.from_environ({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"})


def test_cuda_job_needs_a_gpu_per_local_rank() -> None:
    world = World(rank=0, local_rank=torch.cuda.device_count(), size=1, launched=True)
    with pytest.raises(DistributedError, match="one process per GPU"):
        distributed.local_device(torch.device("cuda"), world)
    assert distributed.local_device(torch.device("cpu"), world) == torch.device("cpu")


def _sequences(n_users: int = 23, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(30, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n_users)]


def _batches():
    cfg = SASRecConfig(dim=8, max_len=8, loss="sampled_softmax", n_negatives=4)
    return make_batches(cfg, _sequences(), 30, batch_size=4, generator=torch.Generator().manual_seed(1))


def test_shards_cover_every_batch_with_equal_steps() -> None:
    full = list(_batches())
    assert len(full) == 6
    one = _batches()
    assert one.shard(0, 1) is one
    for world_size in (2, 4, 8):
        shards = [list(_batches().shard(rank, world_size)) for rank in range(world_size)]
        steps = -(-6 // world_size)
        assert all(len(s) == steps for s in shards), world_size  # DDP: the same number of steps everywhere
        # batch j of the padded list goes to rank j % world_size; the padding repeats from the start
        for j in range(steps * world_size):
            got, want = shards[j % world_size][j // world_size], full[j % 6]
            assert got.keys() == want.keys()
            for key in want:  # the same examples *and* the same random draws (negatives) as in the full list
                assert torch.equal(got[key], want[key]), (world_size, j, key)
    with pytest.raises(ValueError, match="outside a world of size 2"):
        _batches().shard(2, 2)


def test_helpers_are_no_ops_without_a_process_group() -> None:
    assert not distributed.active()
    assert distributed.sum_across({"a": 1.5}, torch.device("cpu")) == {"a": 1.5}
    assert distributed.from_main({"x": 1}) == {"x": 1}
    assert isinstance(distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu")), distributed.LossModule)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny() -> FeatureData:
    fs = feature_set()
    return FeatureData(interactions=fs.interactions, users=fs.users, items=fs.items, meta=fs.meta)


@pytest.mark.parametrize("kind", ["sasrec", "two_tower"])
def test_ddp_with_one_rank_trains_exactly_like_the_plain_loop(tiny, kind, tmp_path) -> None:
    """A gloo group of one, owned by the test (``train`` uses it as is): DDP changes nothing."""
    plain = run(tiny, kind, tmp_path / "plain", epochs=2)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        assert isinstance(distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu")),
                          torch.nn.parallel.DistributedDataParallel)
        ddp = run(tiny, kind, tmp_path / "ddp", epochs=2)
    finally:
        dist.destroy_process_group()
    assert strip_timing(ddp.history) == strip_timing(plain.history)
    assert_same_weights(ddp.model.state_dict(), plain.model.state_dict())
