"""The pieces of multi-process runs that need no second process: how batches and cache rows
split across ranks, and moving cache rows between caches byte for byte.

(The runs themselves, on two gloo processes under torchrun, are in tests/e2e/test_multiprocess_runs.py.)
"""

from __future__ import annotations

import pytest
import torch
from tlengine import distributed
from tlengine.cache import CacheKey, FeatureCache
from tlengine.cache.store import cache_dir_name
from tlengine.distributed import World, shard_loader, split_rows
from torch.utils.data import DataLoader


def _loader(n: int, batch_size: int, seed: int = 0) -> DataLoader:
    return DataLoader(
        list(range(n)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=list,
    )


@pytest.mark.parametrize("n,batch_size,size", [(25, 10, 2), (23, 8, 3), (5, 4, 4), (7, 7, 2), (1, 4, 2)])
def test_sharded_batches_partition_each_batch_one_process_sees(n, batch_size, size):
    whole = list(_loader(n, batch_size))  # what one process trains on, in order
    shards = [shard_loader(_loader(n, batch_size), World(rank, size)) for rank in range(size)]
    assert all(len(s) == len(whole) for s in shards)  # every rank steps the same number of times
    for step, batch in enumerate(whole):
        parts = [list(s)[step] for s in shards]
        counted = [p[: s.counts[step][0]] for p, s in zip(parts, shards)]
        # the counted samples of the ranks are exactly the batch: none dropped, none twice
        assert sorted(x for p in counted for x in p) == sorted(batch)
        assert all(s.counts[step][1] == len(batch) for s in shards)
        # a rank with nothing to count still steps, on a stand-in of that batch, weighted 0
        for part, s in zip(parts, shards):
            assert part and set(part) <= set(batch)
            mine = s.counts[step][0]
            assert s.weight(step) == pytest.approx(mine * size / len(batch))
        # the weights make the average of the ranks' mean losses the batch's mean loss
        losses = [float(sum(p)) / max(len(p), 1) for p in counted]
        weights = [s.counts[step][0] * size / len(batch) for s in shards]
        assert sum(w * loss for w, loss in zip(weights, losses)) / size == pytest.approx(sum(batch) / len(batch))


def test_sharded_order_is_the_order_one_process_draws():
    """The shards follow the loader's own seeded order (DataLoader draws a seed from the
    generator before its sampler does: the shards must draw the same)."""
    whole = [x for b in _loader(30, 6, seed=7) for x in b]
    s0, s1 = (shard_loader(_loader(30, 6, seed=7), World(r, 2)) for r in (0, 1))
    interleaved = [x for a, b in zip(s0, s1) for pair in zip(a, b) for x in pair]
    assert interleaved == whole


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_split_rows_gives_every_row_to_exactly_one_rank(size):
    rows = torch.tensor([0, 3, 4, 9, 10, 11, 17])
    shares = [split_rows(rows, r, size) for r in range(size)]
    assert sorted(torch.cat(shares).tolist()) == rows.tolist()
    assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1


def test_helpers_are_no_ops_in_a_world_of_one():
    assert not distributed.world().distributed and distributed.world().is_main
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_objects(3) == [3]
    assert distributed.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    assert distributed.on_main(lambda: "x") == "x"
    with distributed.main_first():
        pass
    distributed.barrier()


def _key(dtype: str = "int8") -> CacheKey:
    return CacheKey(
        backbone="toy",
        weights_fingerprint="w",
        layer="vector",
        preprocessing={},
        dataset_fingerprint="train:d",
        pooling="avg",
        dtype=dtype,
        views=2,
    )


@pytest.mark.parametrize("dtype", ["int8", "bfloat16", "float32"])
def test_put_rows_copies_rows_byte_for_byte(dtype):
    torch.manual_seed(0)
    a = FeatureCache.open(_key(dtype), num_samples=6, row_dim=5)
    b = FeatureCache.open(_key(dtype), num_samples=6, row_dim=5)
    rows = torch.tensor([1, 4, 7, 10])
    a.write(torch.randn(4, 5, 3, 3), rows)
    b.put_rows(rows, *a.rows_of(rows))
    assert torch.equal(b.read(rows), a.read(rows))
    assert b.missing().tolist() == [r for r in range(12) if r not in rows.tolist()]
    with pytest.raises(ValueError, match="put_rows takes"):
        b.put_rows(rows, torch.zeros(4, 3), torch.ones(4))


def test_disk_cache_takes_in_the_rows_of_an_interrupted_shard(tmp_path):
    """A shard cache (a rank's share of an extraction, left by a kill) is taken into the
    whole cache when it is next opened, and deleted; its rows are not extracted again."""
    key = _key("float16")
    feats = torch.randn(12, 5, 2, 2)
    shard = FeatureCache.open(key, num_samples=6, row_dim=5, storage="disk", root=tmp_path, shard=(1, 2))
    shard.write(feats[[1, 3, 5]], torch.tensor([1, 3, 5]))
    shard.commit()
    shard.write(feats[[7]], torch.tensor([7]))  # written, never committed: not durable, not taken
    shard._fd_finalizer()  # the process died: its descriptors and lock are gone, nothing more is committed
    whole = FeatureCache.open(key, num_samples=6, row_dim=5, storage="disk", root=tmp_path)
    assert whole.missing().numel() == 12  # opening takes nothing by itself ...
    assert whole.absorb_shards() == 3  # ... the caller asks for the shards
    assert not (tmp_path / cache_dir_name(key, (1, 2))).exists()
    expected = FeatureCache.open(_key("float16"), num_samples=6, row_dim=5)
    expected.write(feats[[1, 3, 5]], torch.tensor([1, 3, 5]))
    assert torch.equal(whole.read(torch.tensor([1, 3, 5])), expected.read(torch.tensor([1, 3, 5])))
    assert 7 in whole.missing().tolist()
    whole.close()
    reopened = FeatureCache.open(key, num_samples=6, row_dim=5, storage="disk", root=tmp_path)
    assert sorted(set(range(12)) - set(reopened.missing().tolist())) == [1, 3, 5]  # committed, durable
    reopened.close()


@pytest.mark.parametrize("n,batch_size,size", [(25, 10, 2), (23, 4, 3), (3, 4, 2)])
def test_shared_evaluation_sees_every_batch_once_and_in_order(n, batch_size, size):
    """Evaluation batches go whole to the ranks in turn; put back in loader order they are
    exactly what one process evaluates (a rank may get none)."""
    loader = DataLoader(list(range(n)), batch_size=batch_size, shuffle=False, collate_fn=list)
    per_rank = [list(distributed.whole_batches(loader, World(r, size))) for r in range(size)]
    assert distributed.in_loader_order(per_rank) == list(loader)
