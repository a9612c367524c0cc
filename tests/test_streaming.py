"""Streaming HDF5 data (H5Array) in training and evaluation, sharded Â / NLL, and the streamed split cache."""

from __future__ import annotations

import pickle
import sys

import h5py
import numpy as np
import pytest
import torch

import gebm_ppl as gp
from gebm_ppl.data.stream import H5Array, open_cache
from gebm_ppl.kale import estimate_log_partition, fold_log_partition, log_partition_table
from gebm_ppl.sharding import combine_tables, fold_sum, row_table, sharded_mean, sum_table
from gebm_ppl.training.mle import mean_nll


def _write(path, **arrays) -> str:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return str(path)


def _data(n=600, d=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.5).astype(np.float32)


def _gebm(d=3, seed=1):
    torch.manual_seed(seed)
    return gp.GEBM(gp.RealNVP(d, hidden_features=8, num_layers=2), gp.EnergyMLP(d, hidden=(8,)))


def test_reads_match_the_array_in_any_order(tmp_path):
    x = _data(500)
    arr = H5Array(_write(tmp_path / "a.h5", x=x), "x", chunk_rows=64)
    t = torch.from_numpy(x)
    assert arr.shape == t.shape and len(arr) == 500 and arr.dtype == torch.float32
    idx = torch.tensor([499, 3, 3, -1, 0, 250, 251])  # unsorted, repeated, negative
    torch.testing.assert_close(arr[idx], t[idx], rtol=0, atol=0)
    dense = torch.randperm(500)[:300]  # dense: read as one span
    torch.testing.assert_close(arr[dense], t[dense], rtol=0, atol=0)
    torch.testing.assert_close(arr[10:20], t[10:20], rtol=0, atol=0)
    torch.testing.assert_close(arr[:1], t[:1], rtol=0, atol=0)
    assert [c.shape[0] for c in arr.split(128)] == [c.shape[0] for c in t.split(128)]
    torch.testing.assert_close(torch.cat(list(arr.split(128))), t, rtol=0, atol=0)
    x64 = arr.to(torch.float64)
    assert x64[idx].dtype == torch.float64 and arr[idx].dtype == torch.float32
    again = pickle.loads(pickle.dumps(arr))  # pickles as path + settings, reopens lazily
    torch.testing.assert_close(again[idx], t[idx], rtol=0, atol=0)
    with pytest.raises(IndexError, match="out of range"):
        arr[torch.tensor([500])]


def test_chunk_local_permutation(tmp_path):
    n, rows = 1000, 50  # 20 chunks; blocks of 4 chunks (4 · 50 rows · 3 cols · 4 bytes)
    arr = H5Array(_write(tmp_path / "a.h5", x=_data(n)), "x", chunk_rows=rows, block_bytes=4 * rows * 12)
    assert arr.block_chunks == 4
    perm = arr.permutation(torch.Generator().manual_seed(0))
    assert torch.equal(perm.sort().values, torch.arange(n))
    assert torch.equal(perm, arr.permutation(torch.Generator().manual_seed(0)))  # seeded
    assert not torch.equal(perm, arr.permutation(torch.Generator().manual_seed(1)))
    blocks = (perm // rows).view(5, 200)  # each block of 200 positions draws from exactly 4 chunks
    assert all(len(set(b.tolist())) == 4 for b in blocks)
    for batch in perm.split(64):  # a minibatch touches at most two blocks' chunks
        assert len(set((batch // rows).tolist())) <= 8
    # one block: exactly the in-memory order of the training loop
    small = H5Array(tmp_path / "a.h5", "x", chunk_rows=rows)
    assert torch.equal(small.permutation(torch.Generator().manual_seed(3)),
                       torch.randperm(n, generator=torch.Generator().manual_seed(3)))  # fmt: skip


def test_fit_on_h5_equals_fit_in_memory(tmp_path):
    """With the data in one shuffle block the permutation is torch.randperm: same minibatches, same weights."""
    x = _data(600)
    path = _write(tmp_path / "d.h5", train=x[:500], val=x[500:])
    results = []
    for train, val in ((x[:500], x[500:]), (H5Array(path, "train"), H5Array(path, "val"))):
        torch.manual_seed(1)
        base = gp.RealNVP(3, hidden_features=8, num_layers=2)
        h = gp.fit_mle(base, train, val, epochs=2, batch_size=64, progress=False)
        gebm = gp.GEBM(base, gp.EnergyMLP(3, hidden=(8,)))
        hk = gp.fit_kale(gebm, train, val, epochs=2, batch_size=50, noise_factor=2, log_partition_samples=500,
                         progress=False)  # fmt: skip
        results.append((h.last["val_nll"], hk.last["val_nll"], gebm.state_dict()))
    (a1, b1, s1), (a2, b2, s2) = results
    assert a1 == a2 and b1 == b2
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=0, atol=0)


def test_training_never_reads_the_whole_dataset(tmp_path, monkeypatch):
    n, d = 3000, 3
    x = _data(n, d)
    path = _write(tmp_path / "d.h5", train=x[:2500], val=x[2500:])
    reads = []
    original = H5Array._read

    def counting(self, sel):
        out = original(self, sel)
        reads.append(out.shape[0])
        return out

    monkeypatch.setattr(H5Array, "_read", counting)
    train = H5Array(path, "train", chunk_rows=200, block_bytes=4 * 200 * d * 4)  # 13 chunks, blocks of 4
    val = H5Array(path, "val", chunk_rows=200)
    base = gp.RealNVP(d, hidden_features=8, num_layers=2)
    gp.fit_mle(base, train, val, epochs=1, batch_size=100, eval_batch_size=250, progress=False)
    gebm = gp.GEBM(base, gp.EnergyMLP(d, hidden=(8,)))
    gp.fit_kale(gebm, train, val, epochs=1, batch_size=100, noise_factor=2, log_partition_samples=500,
                eval_batch_size=250, progress=False)  # fmt: skip
    ev = gp.evaluate_gebm(gebm, val, num_samples=500, batch_size=250)
    assert np.isfinite(ev.nll)
    assert max(reads) <= 250  # whole 200-row chunks (minibatches, the checks) and 250-row evaluation batches
    assert sum(reads) >= 4 * n  # and yet every row was read, several times (checks, epochs, evaluations)
    assert len(train._cache) == 0  # the loops read through their own converted copy ...
    copy = train.to(torch.float32)
    copy[copy.permutation(torch.Generator().manual_seed(0))[:2000]]
    assert len(copy._cache) == copy.block_chunks == 4  # ... whose cache holds one block of chunks at most


def test_sharded_log_partition_and_nll_equal_unsharded(tmp_path):
    gebm = _gebm()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    full = estimate_log_partition(gebm, 2500, 300, generator=g())
    tables = [log_partition_table(gebm, 2500, 300, generator=g(), rank=r, world_size=2) for r in (0, 1)]
    assert torch.isinf(tables[0][1::2]).all() and torch.isinf(tables[1][0::2]).all()  # each rank its batches
    assert fold_log_partition(combine_tables(tables, "max"), 2500) == full  # bit for bit
    x = torch.from_numpy(_data(1001))
    arr = H5Array(_write(tmp_path / "x.h5", x=x.numpy()), "x")

    def nll(c):
        return -gebm.base.log_prob(c)

    with torch.no_grad():
        unsharded = mean_nll(gebm.base, x, 128)
        for data in (x, arr):
            parts = [sum_table(nll, data, 128, r, 3) for r in range(3)]
            assert fold_sum(combine_tables(parts, "sum")) / 1001 == unsharded
            rows = combine_tables([row_table(nll, data, 128, r, 3) for r in range(3)], "sum")
            torch.testing.assert_close(rows, -gebm.base.log_prob(x).double(), rtol=1e-6, atol=1e-6)
        assert sharded_mean(nll, arr, 128) == unsharded
    with pytest.raises(RuntimeError, match="initialised torch.distributed"):
        estimate_log_partition(gebm, 100, 50, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank < world_size"):
        estimate_log_partition(gebm, 100, 50, rank=2, world_size=2)


def _sharded_worker(rank, path, init, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        gebm = _gebm()
        ev = gp.evaluate_gebm(gebm, H5Array(path, "x"), num_samples=900, batch_size=200, rank=rank, world_size=2)
        torch.save(ev.to_dict(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_process_evaluation_equals_one_process(tmp_path):
    """evaluate_gebm on 2 gloo ranks, each reading its share of an H5Array, equals the 1-process value exactly."""
    import torch.multiprocessing as mp

    x = _data(700)
    path = _write(tmp_path / "x.h5", x=x)
    init = f"file://{tmp_path / 'store'}"
    # fork: the workers share the parent's imports (spawn re-imports torch and gebm_ppl, ~10 s on 2 cores);
    # but once another test has started JAX (multithreaded), fork may deadlock, so spawn then
    method = "spawn" if "jax" in sys.modules else "fork"
    mp.start_processes(_sharded_worker, args=(path, init, str(tmp_path / "ev")), nprocs=2, start_method=method)
    want = gp.evaluate_gebm(_gebm(), torch.from_numpy(x), num_samples=900, batch_size=200).to_dict()
    for rank in (0, 1):
        assert torch.load(tmp_path / f"ev.{rank}") == want


def test_clear_errors(tmp_path):
    x = _data(300)
    x[123, 1] = np.nan
    x[200, 0] = np.inf
    path = _write(tmp_path / "d.h5", bad=x, cube=np.zeros((2, 3, 4), np.float32), text=np.array([[b"a"], [b"b"]]))
    with pytest.raises(FileNotFoundError, match="no HDF5 file"):
        H5Array(tmp_path / "missing.h5", "train")
    with pytest.raises(KeyError, match=r"no dataset 'train'; it has \['bad', 'cube', 'text'\]"):
        H5Array(path, "train")
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        H5Array(path, "cube")
    with pytest.raises(TypeError, match="real numbers"):
        H5Array(path, "text")
    base = gp.RealNVP(3, hidden_features=8, num_layers=2)
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN or inf values \(first: row 123\)"):
        gp.fit_mle(base, H5Array(path, "bad"), epochs=1, progress=False)
    with h5py.File(path, "r") as f:  # an h5py Dataset is opened as an H5Array too
        with pytest.raises(ValueError, match="first: row 123"):
            gp.fit_mle(base, f["bad"], epochs=1, progress=False)
    with pytest.raises(ValueError, match="should have 2 columns"):
        gp.fit_mle(gp.RealNVP(2, hidden_features=8, num_layers=2), H5Array(path, "bad"), epochs=1, progress=False)
    with pytest.raises(ValueError, match="first in row 123"):
        gp.evaluate_gebm(_gebm(), H5Array(path, "bad"), num_samples=100)


def test_streamed_split_cache(tmp_path):
    """gp.data.load(..., stream=True): the cache file's splits as H5Arrays, equal to the in-memory load."""
    rng = np.random.default_rng(0)
    raw = np.column_stack([rng.gamma(2.0, 0.5, 2000), rng.gamma(1.0, 0.1, 2000), rng.normal(240, 3, 2000),
                           rng.gamma(2.0, 2.0, 2000), rng.integers(0, 40, (2000, 3)), rng.random(2000)])  # fmt: skip
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    cache = tmp_path / "c"
    streamed = gp.data.load("power", tmp_path, cache_dir=cache, stream=True)  # builds, then streams
    assert isinstance(streamed.train, H5Array) and streamed.dim == 6
    memory = gp.data.load("power", tmp_path, cache_dir=cache)
    again = gp.data.load("power", tmp_path, cache_dir=cache, stream=True)
    assert again.metadata["from_cache"]
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(torch.cat(list(getattr(again, k).split(97))).numpy(), getattr(memory, k))
    path = streamed.metadata["cache"]
    assert open_cache(path, "another key") is None
    with open(path, "r+b") as f:  # one damaged byte: the streamed check refuses the file
        f.seek(3000)
        byte = f.read(1)
        f.seek(3000)
        f.write(bytes([byte[0] ^ 1]))
    rebuilt = gp.data.load("power", tmp_path, cache_dir=cache, stream=True)
    assert not rebuilt.metadata["from_cache"]
