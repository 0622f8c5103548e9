"""Feature cache: keys, memory/disk round trips, reuse, corruption, crash-and-resume, management."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tlengine import kernels as front
from tlengine.cache import (
    CacheKey,
    CacheMissError,
    FeatureCache,
    check_cache_root,
    default_root,
    fingerprint_items,
    fingerprint_state_dict,
    format_size,
    list_caches,
    remove_caches,
    row_dim_for,
    store,
)
from tlengine.cache.key import DTYPES
from tlengine.errors import TLEngineError
from tlengine.kernels import reference
from tlengine.kernels.reference import gather_dequantize, pooled_rows

KEY = CacheKey(
    backbone="tiny-cnn",
    weights_fingerprint="w0",
    layer="pooled",
    preprocessing={
        "size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "crop": "center",
        "augment": {"flip": True},
    },
    dataset_fingerprint="d0",
    pooling="avg",
    dtype="float32",
    views=2,
)
N, C, HW = 12, 16, 3  # samples, channels, spatial side
R = N * KEY.views

# The reference ops keep these tests independent of whether the fused extension is built
# (building it can take minutes); test_round_trip_default_kernels covers the default path.
open_cache = functools.partial(FeatureCache.open, kernels="torch")


def notice(capsys: pytest.CaptureFixture) -> str:
    """The one line the cache printed to stderr: a plain "warning: ..." (no file:line, no traceback)."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: feature cache "), err
    assert "Warning:" not in err and ".py:" not in err, err
    return lines[0]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def feats(rows: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Deterministic conv features [len(rows), C, HW, HW] for each row id."""
    out = torch.empty(len(rows), C, HW, HW)
    for i, r in enumerate(rows.tolist()):
        g = torch.Generator().manual_seed(1000 * salt + r)
        out[i] = torch.randn(C, HW, HW, generator=g) * (1 + r % 5)
    return out


def fill(cache: FeatureCache, batch: int = 5, salt: int = 0) -> None:
    todo = cache.missing()
    for i in range(0, len(todo), batch):
        rows = todo[i : i + batch]
        cache.write(feats(rows, salt), rows)


def assert_rows_match(
    got: torch.Tensor, rows: torch.Tensor, key: CacheKey, salt: int = 0, kernels: str = "torch"
) -> None:
    """The store must give back exactly what the kernel wrote (into a scratch table here),
    and that must be the reference's float rows within the storage dtype's rounding."""
    x, n = feats(rows, salt), len(rows)
    table, scales = torch.zeros(n, C, dtype=DTYPES[key.dtype]), torch.ones(n)
    ops = reference if kernels == "torch" else front
    ops.pool_quantize_scatter(x, table, scales, torch.arange(n), key.pooling, key.l2_normalize)
    assert torch.equal(got, gather_dequantize(table, scales, torch.arange(n)))
    want = pooled_rows(x, key.pooling, key.l2_normalize)
    if key.dtype == "int8":
        step = want.abs().amax(1, keepdim=True) / 127
        assert ((got - want).abs() <= step * 0.5001).all()
    else:
        rtol = {"float32": 1e-6, "float16": 1e-3, "bfloat16": 8e-3}[key.dtype]
        torch.testing.assert_close(got, want, rtol=rtol, atol=1e-6)


# ---------------------------------------------------------------------- keys
def test_key_digest_covers_every_field() -> None:
    base = KEY.digest()
    assert base == replace(KEY).digest() and len(base) == 64
    changes = dict(
        backbone="other",
        weights_fingerprint="w1",
        layer="stage3",
        dataset_fingerprint="d1",
        pooling="max",
        dtype="int8",
        views=3,
        l2_normalize=True,
        format_version=99,
        preprocessing={**KEY.preprocessing, "size": 64},
    )
    digests = {replace(KEY, **{k: v}).digest() for k, v in changes.items()}
    assert len(digests) == len(changes) and base not in digests
    # Tuples and lists are the same JSON; the key is hashable despite its dict field.
    same = replace(KEY, preprocessing={**KEY.preprocessing, "mean": (0.5, 0.5, 0.5)})
    assert same.digest() == base and hash(same) == hash(KEY)
    for bad in (dict(dtype="float64"), dict(pooling="sum"), dict(views=0), dict(preprocessing={"f": object()})):
        with pytest.raises(ValueError):
            replace(KEY, **bad)


def test_fingerprints() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fp = fingerprint_state_dict(model)
    assert fp == fingerprint_state_dict(model.state_dict())
    model[1].running_mean += 1  # buffers count
    assert fingerprint_state_dict(model) != fp
    bf = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    assert fingerprint_state_dict(bf) != fingerprint_state_dict(model)
    assert fingerprint_items(["ab", "c"]) != fingerprint_items(["a", "bc"])
    assert fingerprint_items([b"x", "y"]) == fingerprint_items(["x", b"y"])
    assert fingerprint_items(["a", "b"]) != fingerprint_items(["b", "a"])


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("storage", ["memory", "disk"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_round_trip(tmp_path: Path, storage: str, dtype: str) -> None:
    key = replace(KEY, dtype=dtype)
    with open_cache(key, num_samples=N, row_dim=C, storage=storage, root=tmp_path) as cache:
        assert cache.missing().tolist() == list(range(R)) and not cache.is_complete
        fill(cache)
        assert cache.missing().numel() == 0
        cache.finalize()
        assert cache.is_complete
        rows = torch.tensor([5, 0, 23, 5, 17])
        got = cache.read(rows)
        assert got.shape == (5, C) and got.dtype == torch.float32
        assert_rows_match(got, rows, key)
        assert cache.read(rows, dtype=torch.float16).dtype == torch.float16
        s = cache.stats
        assert (s["rows"], s["rows_reused"], s["rows_extracted"], s["hits"]) == (R, 0, R, 10)
        assert s["storage"] == storage and s["dtype"] == dtype and s["views"] == 2
        assert s["bytes"] == R * C * DTYPES[dtype].itemsize + R * 5
    if storage == "memory":
        assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_round_trip_default_kernels(tmp_path: Path, dtype: str) -> None:
    # kernels="auto": the fused ops when built, writing straight into the memory maps.
    key = replace(KEY, dtype=dtype)
    with FeatureCache.open(key, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        assert cache.kernels == "auto"
        fill(cache)
        cache.finalize()
    with FeatureCache.open(key, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        rows = torch.arange(R)
        assert_rows_match(cache.read(rows), rows, key, kernels="auto")


def test_token_features_and_row_dim() -> None:
    key = replace(KEY, pooling="none", l2_normalize=True)
    t, d = 4, 6
    dim = row_dim_for((t, d), "none")
    assert dim == 24 and row_dim_for((t, d), "cls") == 6 and row_dim_for((C, HW, HW), "avg") == C
    with open_cache(key, num_samples=3, row_dim=dim) as cache:
        x = torch.randn(6, t, d)
        cache.write(x, torch.arange(6))
        got = cache.read(torch.arange(6)).view(6, t, d)
        torch.testing.assert_close(got, x / x.norm(dim=-1, keepdim=True))


def test_write_must_match_key_and_reads_must_be_filled() -> None:
    with open_cache(KEY, num_samples=N, row_dim=C) as cache:
        with pytest.raises(ValueError, match="pooling"):
            cache.write(feats(torch.tensor([0])), torch.tensor([0]), pooling="max")
        with pytest.raises(ValueError, match="l2_normalize"):
            cache.write(feats(torch.tensor([0])), torch.tensor([0]), l2_normalize=True)
        cache.write(feats(torch.tensor([0, 1])), torch.tensor([0, 1]), pooling="avg", l2_normalize=False)
        cache.read(torch.tensor([0, 1]))
        with pytest.raises(CacheMissError, match=r"\[2\]"):
            cache.read(torch.tensor([0, 2]))
        with pytest.raises(RuntimeError, match="missing"):
            cache.finalize()


def test_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = torch.arange(R)
    with open_cache(KEY, num_samples=N, row_dim=C, kernels="torch") as cache:
        fill(cache)
        assert cache.stats["kernels"] == "torch"
        torch.testing.assert_close(cache.read(rows), pooled_rows(feats(rows), "avg", False))
    with pytest.raises(ValueError, match="kernels"):
        open_cache(KEY, num_samples=N, row_dim=C, kernels="cuda")
    monkeypatch.setattr(front, "extension_available", lambda: False)
    with pytest.raises(TLEngineError, match="fused"):
        open_cache(KEY, num_samples=N, row_dim=C, kernels="fused")


def test_rows_and_views() -> None:
    assert FeatureCache.row_index(torch.tensor([0, 3]), 2).tolist() == [0, 1, 6, 7]
    assert FeatureCache.row_index(torch.tensor([0, 3]), 2, torch.tensor([1, 0])).tolist() == [1, 6]
    samples, views = FeatureCache.sample_view(torch.tensor([1, 6, 7]), 2)
    assert samples.tolist() == [0, 3, 3] and views.tolist() == [1, 0, 1]
    cache = open_cache(replace(KEY, views=4), num_samples=100, row_dim=C)
    a, b = cache.draw_views(3, 100, seed=7), cache.draw_views(3, 100, seed=7)
    assert a.dtype == torch.int64 and a.shape == (100,) and torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < 4 and len(a.unique()) == 4
    assert not torch.equal(a, cache.draw_views(4, 100, seed=7))
    assert not torch.equal(a, cache.draw_views(3, 100, seed=8))
    one = open_cache(replace(KEY, views=1), num_samples=5, row_dim=C)
    assert one.draw_views(0, 5, seed=0).tolist() == [0] * 5


def test_staged_write_matches_kernel_write() -> None:
    # The path used when features live on another device (GPU backbone, CPU cache): pool
    # there, move rows. Same result as the in-place kernel, including "last repeat wins".
    key = replace(KEY, dtype="int8")
    rows = torch.tensor([3, 1, 3, 0])
    x = feats(torch.arange(4))
    direct = open_cache(key, num_samples=N, row_dim=C)
    staged = open_cache(key, num_samples=N, row_dim=C)
    direct.write(x, rows)
    staged._write_staged(x, rows)
    assert torch.equal(direct.data, staged.data) and torch.equal(direct.scales, staged.scales)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_cache_on_gpu() -> None:
    with open_cache(KEY, num_samples=N, row_dim=C, device="cuda") as cache:
        fill(cache)
        rows = torch.arange(R)
        got = cache.read(rows)
        assert got.is_cuda
        assert_rows_match(got.cpu(), rows, KEY)


# ---------------------------------------------------------------------- disk reuse / invalidation
def test_reopen_complete_disk_cache(tmp_path: Path) -> None:
    key = replace(KEY, dtype="int8")
    with open_cache(key, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        fill(cache)
        cache.finalize()
        path = cache.path
    meta = json.loads((path / "meta.json").read_text())
    assert meta["complete"] and meta["checksum"].startswith("blake2b:") and meta["hits"] == 0
    assert path.name == key.digest()[:20]
    for run in (1, 2):
        with open_cache(key, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
            assert cache.is_complete and cache.missing().numel() == 0
            rows = torch.arange(R)
            assert_rows_match(cache.read(rows), rows, key)
            assert cache.stats["rows_reused"] == R and cache.stats["rows_extracted"] == 0
        assert json.loads((path / "meta.json").read_text())["hits"] == run


def test_key_change_is_a_different_cache(tmp_path: Path) -> None:
    a = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
    fill(a)
    a.finalize()
    a.close()
    for other in (replace(KEY, weights_fingerprint="w1"), replace(KEY, dtype="float16")):
        with open_cache(other, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as b:
            assert b.path != a.path and b.missing().numel() == R
    sharded = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path, shard=(1, 2))
    assert sharded.path.name == f"{KEY.digest()[:20]}-r1of2" and sharded.missing().numel() == R
    sharded.close()
    assert len(list_caches(tmp_path)) == 4


def test_corrupt_complete_cache_is_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        fill(cache)
        cache.finalize()
        path = cache.path
    flip_byte(path / "data.bin", 100)
    capsys.readouterr()
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
    assert "checksum mismatch" in notice(capsys)
    assert not cache.is_complete and cache.missing().numel() == R
    fill(cache)
    cache.finalize()
    cache.close()


def test_mismatched_meta_is_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        fill(cache)
        cache.finalize()
        path = cache.path
    capsys.readouterr()
    cache = open_cache(KEY, num_samples=N, row_dim=C + 1, storage="disk", root=tmp_path)
    assert "row_dim" in notice(capsys)  # same key, different shape: not trusted
    assert cache.missing().numel() == R
    cache.close()
    (path / "meta.json").write_text("{not json")
    open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path).close()
    assert "meta.json" in notice(capsys)


def test_all_rows_committed_but_not_finalized(tmp_path: Path) -> None:
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
    fill(cache)
    cache.close()  # commits, but nobody called finalize (crash before the meta write)
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as again:
        assert again.is_complete
        assert json.loads((again.path / "meta.json").read_text())["complete"]


# ---------------------------------------------------------------------- crash and resume
CRASH_WRITER = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, sys.argv[2])
    from test_feature_cache import KEY, N, C, feats, open_cache
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=sys.argv[1], commit_every=0)
    for rows in (torch.arange(0, 8), torch.arange(8, 16)):
        cache.write(feats(rows), rows)
    cache.commit()
    cache.write(feats(torch.arange(16, 20)), torch.arange(16, 20))           # never committed
    cache.write(feats(torch.tensor([3, 4]), salt=9), torch.tensor([3, 4]))   # rewrites committed rows
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_crash_and_resume(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_WRITER, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
    assert not cache.is_complete
    missing = cache.missing().tolist()
    # Committed rows survive; uncommitted ones and rows being rewritten are missing, never stale/torn.
    assert missing == [3, 4] + list(range(16, R))
    kept = torch.tensor([r for r in range(R) if r not in missing])
    assert_rows_match(cache.read(kept), kept, KEY)
    with pytest.raises(CacheMissError):
        cache.read(torch.tensor([16]))
    assert cache.stats["rows_reused"] == 14
    fill(cache)
    cache.finalize()
    rows = torch.arange(R)
    assert_rows_match(cache.read(rows), rows, KEY)
    assert cache.stats["rows_extracted"] == R - 14
    cache.close()


# Small checksum chunks for the tests below: 4 rows of 16 float32 + a float32 scale each.
CHUNK_ROWS = 4
small_chunks = pytest.mark.usefixtures("small_sum_chunks")


@pytest.fixture
def small_sum_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_SUM_CHUNK_BYTES", CHUNK_ROWS * (C * 4 + 4), raising=False)


def commit_rows(root: Path, rows: torch.Tensor) -> Path:
    """A partial disk cache (closed) whose ``rows`` are committed."""
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=root, commit_every=0) as cache:
        cache.write(feats(rows), rows)
        cache.commit()
        return cache.path


@small_chunks
@pytest.mark.parametrize("where", ["data", "scale", "flag"])
def test_corrupt_committed_rows_of_partial_cache_are_extracted_again(
    tmp_path: Path, capsys: pytest.CaptureFixture, where: str
) -> None:
    path = commit_rows(tmp_path, torch.arange(16))
    if where == "data":
        flip_byte(path / "data.bin", 9 * C * 4 + 5)  # inside committed row 9 (chunk 8..11)
        lost = [8, 9, 10, 11]
    elif where == "scale":
        flip_byte(path / "scales.bin", 9 * 4 + 3)
        lost = [8, 9, 10, 11]
    else:
        flip_byte(path / "filled.bin", 18)  # row 18 was never written but now claims to be
        lost = []
    capsys.readouterr()
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
    line = notice(capsys)
    assert line == (
        f"warning: feature cache {path}: {len(lost) or 1} committed rows in 1 chunk do not match their "
        "checksums (changed on disk after they were written); extracting them again"
    )
    assert cache.missing().tolist() == lost + list(range(16, R))
    with pytest.raises(CacheMissError):
        cache.read(torch.tensor([9 if lost else 18]))
    kept = torch.tensor([r for r in range(16) if r not in lost])
    assert_rows_match(cache.read(kept), kept, KEY)
    assert cache.stats["rows_reused"] == 16 - len(lost)
    fill(cache)
    cache.finalize()
    cache.close()
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as again:
        assert again.is_complete and capsys.readouterr().err == ""
        rows = torch.arange(R)
        assert_rows_match(again.read(rows), rows, KEY)
        assert again.stats["rows_reused"] == R
    sums = json.loads((path / "checksums.json").read_text())
    assert sums["chunk_rows"] == CHUNK_ROWS and len(sums["chunks"]) == R // CHUNK_ROWS


@small_chunks
def test_corrupt_row_is_not_checksummed_into_a_complete_cache(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Every row committed, but the run died before finalize: opening it used to mark the cache
    # complete with a checksum of whatever the files held, so a corrupt row was trained on.
    path = commit_rows(tmp_path, torch.arange(R))
    flip_byte(path / "data.bin", 21 * C * 4 + 2)
    capsys.readouterr()
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
    assert "4 committed rows in 1 chunk do not match" in notice(capsys)
    assert not cache.is_complete and cache.missing().tolist() == [20, 21, 22, 23]
    assert not json.loads((path / "meta.json").read_text())["complete"]
    fill(cache)
    cache.finalize()
    rows = torch.arange(R)
    assert_rows_match(cache.read(rows), rows, KEY)
    cache.close()


def test_partial_cache_without_checksums_is_not_trusted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = commit_rows(tmp_path, torch.arange(6))
    (path / "checksums.json").unlink()  # e.g. written by an older tlengine
    capsys.readouterr()
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        assert "6 committed rows in 1 chunk have no checksums" in notice(capsys)
        assert cache.missing().numel() == R
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        assert capsys.readouterr().err == "" and cache.missing().numel() == R


@small_chunks
def test_rewriting_rows_of_a_complete_cache_keeps_checksums_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        fill(cache)
        cache.finalize()
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path, commit_every=0) as cache:
        cache.write(feats(torch.tensor([5, 13]), salt=3), torch.tensor([5, 13]))  # complete -> partial
        assert not cache.is_complete
    capsys.readouterr()
    with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as cache:
        # close() committed the rewrite: every row is valid and nothing is reported corrupt
        assert capsys.readouterr().err == "" and cache.is_complete
        assert_rows_match(cache.read(torch.tensor([5, 13])), torch.tensor([5, 13]), KEY, salt=3)


HOLDER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, sys.argv[2])
    from test_feature_cache import KEY, N, C, fill, open_cache
    cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=sys.argv[1])
    print("writing", flush=True)
    time.sleep(0.5)
    fill(cache)
    cache.finalize()                 # now only reading: the lock becomes shared
    print("complete", flush=True)
    sys.stdin.read()                 # hold the cache open until the parent closes our stdin
    cache.close()
""")


def test_concurrent_processes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as other:
        # The other process is extracting: a second opener waits for it, then reuses its rows.
        assert other.stdout.readline().strip() == "writing"
        capsys.readouterr()
        cache = open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
        assert "in use by another process; waiting for it" in notice(capsys)
        assert cache.is_complete and cache.stats["rows_reused"] == R
        assert other.stdout.readline().strip() == "complete"
        with pytest.raises(RuntimeError, match="already open in this process"):
            open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path)
        with pytest.raises(TLEngineError, match="open in this process"):
            remove_caches([], root=tmp_path, all=True)
        # Both only read now: rewriting rows or removing the cache is refused.
        with pytest.raises(RuntimeError, match="other processes are reading"):
            cache.write(feats(torch.tensor([0])), torch.tensor([0]))
        assert cache.missing().numel() == 0
        cache.close()
        with open_cache(KEY, num_samples=N, row_dim=C, storage="disk", root=tmp_path) as again:
            assert again.is_complete
            rows = torch.arange(R)
            assert_rows_match(again.read(rows), rows, KEY)
        with pytest.raises(TLEngineError, match="in use by another process"):
            remove_caches([], root=tmp_path, all=True)
        other.stdin.close()
        assert other.wait(timeout=60) == 0
    assert len(remove_caches([], root=tmp_path, all=True)) == 1


# ---------------------------------------------------------------------- management
def test_list_and_remove(tmp_path: Path) -> None:
    paths = []
    for fp in ("w0", "w1", "w2"):
        with open_cache(
            replace(KEY, weights_fingerprint=fp), num_samples=N, row_dim=C, storage="disk", root=tmp_path
        ) as cache:
            if fp == "w0":
                fill(cache)
                cache.finalize()
            else:
                cache.write(feats(torch.arange(4)), torch.arange(4))
            paths.append(cache.path)
    not_cache = tmp_path / "notacache"
    not_cache.mkdir()
    (not_cache / "precious.txt").write_text("keep me")
    (tmp_path / "stray.bin").write_bytes(b"x")

    listed = {c["digest"]: c for c in list_caches(tmp_path)}
    assert set(listed) == {p.name for p in paths}
    full = listed[paths[0].name]
    assert full["complete"] and full["rows_filled"] == full["rows_total"] == R and full["hits"] == 0
    assert full["key"]["weights_fingerprint"] == "w0" and full["size"] > 0
    part = listed[paths[1].name]
    assert not part["complete"] and part["rows_filled"] == 4

    with pytest.raises(TLEngineError, match="nomatch"):
        remove_caches(["nomatch"], root=tmp_path)
    with pytest.raises(TLEngineError, match="notacache"):  # a dir without meta.json is not a cache
        remove_caches(["notacache"], root=tmp_path)
    with pytest.raises(TLEngineError):
        remove_caches([""], root=tmp_path)
    # An unknown selector aborts before anything is deleted.
    with pytest.raises(TLEngineError):
        remove_caches([paths[0].name[:8], "zzzz"], root=tmp_path)
    assert paths[0].exists()

    assert remove_caches([paths[0].name[:8]], root=tmp_path) == [paths[0]]
    assert not paths[0].exists()
    # A cache dir someone put other files into is refused, not emptied.
    (paths[1] / "notes.txt").write_text("mine")
    with pytest.raises(TLEngineError, match="notes.txt"):
        remove_caches([paths[1].name], root=tmp_path)
    assert (paths[1] / "data.bin").exists()
    (paths[1] / "notes.txt").unlink()
    assert sorted(remove_caches([], root=tmp_path, all=True)) == sorted(paths[1:])
    assert list_caches(tmp_path) == []
    assert (not_cache / "precious.txt").read_text() == "keep me" and (tmp_path / "stray.bin").exists()
    assert list_caches(tmp_path / "absent") == []


def test_default_root_and_format_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(tmp_path))
    assert default_root() == tmp_path / "features"
    monkeypatch.delenv("TLENGINE_CACHE_DIR")
    assert default_root() == Path.home() / ".cache" / "tlengine" / "features"
    assert [format_size(n) for n in (0, 1023, 1536, 5 << 20, 3 << 40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 TiB",
    ]


def test_check_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert check_cache_root(tmp_path) is None
    assert check_cache_root(tmp_path / "not" / "yet" / "there") is None
    assert not (tmp_path / "not").exists() and list(tmp_path.iterdir()) == []  # the check creates nothing
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad in (afile, afile / "sub"):  # a file where a folder must be: unusable even for root
        msg = check_cache_root(bad)
        assert msg == (
            f"feature cache folder {bad} cannot be created ({afile} is not a folder); "
            "set strategy.cache.root to a writable folder"
        )
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(afile / "cache"))
    assert check_cache_root(None) == (
        f"feature cache folder {afile / 'cache' / 'features'} cannot be created "
        f"({afile} is not a folder); set TLENGINE_CACHE_DIR or strategy.cache.root "
        "to a writable folder"
    )
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(tmp_path / "c"))
    assert check_cache_root(None) is None and list(tmp_path.iterdir()) == [afile]


def test_check_cache_root_reports_an_unwritable_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Permission bits do not stop root (these tests may run as root), so the failing write is simulated.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.tempfile, "TemporaryFile", refuse)
    assert check_cache_root(tmp_path) == (
        f"feature cache folder {tmp_path} is not writable (Permission denied); "
        "set strategy.cache.root to a writable folder"
    )
    assert check_cache_root(tmp_path / "sub") == (
        f"feature cache folder {tmp_path / 'sub'} cannot be created "
        f"({tmp_path} is not writable: Permission denied); "
        "set strategy.cache.root to a writable folder"
    )
