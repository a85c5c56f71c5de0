"""torchrun sharding: every image goes to exactly one rank; the rank comes from the environment."""
from __future__ import annotations

import pytest
import torch

from evaluation.shards import Rank, current_rank, shard
from configs import pick_device


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("n", [0, 1, 5, 1000])
def test_shards_cover_every_image_exactly_once(world_size: int, n: int) -> None:
    shards = [shard(range(n), r, world_size) for r in range(world_size)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n)) and len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_rank_comes_from_the_torchrun_environment(monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert current_rank() == Rank(0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_rank() == Rank(5, 8, 1)
    # CPU runs keep the CPU; CUDA ranks would get cuda:LOCAL_RANK.
    assert pick_device("cpu", local_rank=1) == torch.device("cpu")
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(ValueError, match="outside 0..WORLD_SIZE-1"):
        current_rank()
