"""Multi-process runs under `torchrun`: which rank am I, which images are mine, wait for the others.

Sharding rule: with W processes, rank r takes positions r, r + W, r + 2W, ... of the sorted image
list (`items[r::W]`). Every image goes to exactly one rank, shard sizes differ by at most one, and
images keep their global index (so per-image seeds, hence outputs, do not depend on W).
"""
from __future__ import annotations

import datetime
import os
from typing import List, NamedTuple, Sequence, TypeVar

T = TypeVar("T")


class Rank(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def current_rank() -> Rank:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; (0, 1, 0) when run plainly."""
    try:
        rank = Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if not 0 <= rank.rank < rank.world_size:
        raise ValueError(f"RANK={rank.rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={rank.world_size})")
    return rank


def shard(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """This rank's items: positions rank, rank + world_size, ... (see the module docstring)."""
    return list(items[rank::world_size])


def barrier(rank: Rank, hours: float = 24.0) -> None:
    """Block until every rank arrives (no-op for one process). Starts a gloo process group from
    torchrun's environment on first use; the long timeout covers ranks that finish their shards at
    different times."""
    if rank.world_size == 1:
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=hours))
    dist.barrier()
