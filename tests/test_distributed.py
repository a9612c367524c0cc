"""Data-parallel training on torch.distributed (gloo, 2 CPU processes under torch.distributed.run).

With W ranks every step uses the 1-process run's global minibatch and random draws, each rank its share,
so a 2-process run of fit_kale (energy and base), fit_mle (with input noise) and fit_adversarial (KALE and
GAN) equals the 1-process run, with uneven and empty shards of the last minibatch too, up to float32
rounding of the shares' sums (DDP averages the gradients in float32): after 4-15 steps the weights agree
to 2e-6 absolute and the records' losses, NLLs and c to 2e-6 relative (measured on a 2-core x86 CPU: at
most 6e-8 and 3e-8). A run stopped by max_steps resumes with the other world size, both ways (2 → 1 and
1 → 2), and ends where the uninterrupted run does, to the same tolerance.

This file is also the worker: ``python -m torch.distributed.run --nproc_per_node 2 tests/test_distributed.py
OUT CKPT`` runs the 2-process side and rank 0 saves its results under OUT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gebm_ppl as gp

ATOL = 2e-6  # weights after the runs below (measured: max |difference| 6e-8)
RTOL = 2e-6  # losses, NLLs, c in the records (measured: 3e-8)

KALE = dict(train_base=True, epochs=3, batch_size=20, noise_factor=3, warmup_energy_steps=2, n_energy_steps=2,
            penalty=0.1, energy_l2=0.01, log_partition_samples=400, eval_batch_size=128, seed=3, progress=False)
MLE = dict(epochs=3, batch_size=20, noise_std=0.1, eval_batch_size=128, seed=5, progress=False)
ADV = dict(steps=4, batch_size=15, noise_factor=2, energy_steps=2, burst_steps=3, burst_every=2, eval_every=2,
           log_partition_samples=300, eval_batch_size=128, lr=1e-3, seed=7, progress=False)
STOP = 7  # the interrupted KALE run stops mid-epoch 2 (5 steps per epoch; epoch 1's base step included)
KEYS = ("train_loss", "kale_batch", "base_loss", "val_nll", "log_partition", "kale_val", "energy_loss")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(123, 2, generator=g) * torch.tensor([1.0, 0.5]) + 0.3
    return x[:93], x[93:]  # 93 rows: batches of 20 and a last one of 13 (shares 7 and 6)


def _gebm(seed: int = 0) -> gp.GEBM:
    torch.manual_seed(seed)
    return gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(16,)))


def _generator_gebm(seed: int = 0) -> gp.GEBM:
    torch.manual_seed(seed)
    return gp.GEBM(gp.MLPGenerator(2, 2, hidden=(16,), output="identity"), gp.EnergyMLP(2, hidden=(16,)))


def _result(model: torch.nn.Module, history) -> dict:
    records = [{k: r[k] for k in ("step", *KEYS) if k in r} for r in history.records]
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "records": records}


def _runs(ckpt_in: Path | None, ckpt_out: Path) -> dict:
    """The runs both sides make: full KALE, KALE stopped at STOP (checkpointed), the resume of ``ckpt_in``
    (written by the other world size) to the end, MLE with input noise, adversarial KALE and GAN."""
    x, v = _data()
    out = {}
    g = _gebm()
    out["kale"] = _result(g, gp.fit_kale(g, x, v, **KALE))
    g = _gebm()
    gp.fit_kale(g, x, v, max_steps=STOP, checkpoint_path=ckpt_out, **KALE)
    if ckpt_in is not None:
        g = _gebm(seed=99)  # other initial weights: everything must come from the checkpoint
        out["resumed"] = _result(g, gp.fit_kale(g, x, v, resume=ckpt_in, **KALE))
    base = _gebm().base  # 81 rows: the last batch has 1 row, so rank 1's share of it is empty
    out["mle"] = _result(base, gp.fit_mle(base, x[:81], v, **MLE))
    for objective in ("kale", "gan"):
        g = _generator_gebm()
        out[f"adversarial-{objective}"] = _result(g, gp.fit_adversarial(g, x, v, objective=objective, **ADV))
    return out


def _assert_close(a: dict, b: dict, what: str) -> None:
    assert a["state"].keys() == b["state"].keys()
    for name, t in a["state"].items():
        diff = float((t - b["state"][name]).abs().max())
        assert diff <= ATOL, f"{what}: {name} differs by {diff:.2e}"
    assert len(a["records"]) == len(b["records"]), what
    for ra, rb in zip(a["records"], b["records"], strict=True):
        assert ra.keys() == rb.keys() and ra["step"] == rb["step"], what
        for k in KEYS:
            if k in ra:
                assert abs(ra[k] - rb[k]) <= RTOL * max(1.0, abs(ra[k])), f"{what}: {k} {ra[k]} vs {rb[k]}"


def test_two_gloo_processes_equal_one_and_resume_across_world_sizes(tmp_path):
    torch.set_num_threads(1)
    one = _runs(None, tmp_path / "one.pt")  # the 1-process side; one.pt: its run stopped at STOP
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
           str(tmp_path), str(tmp_path / "one.pt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert two["world_size"] == 2
    assert all(two["same_on_ranks"].values()), two["same_on_ranks"]
    for kind in ("kale", "mle", "adversarial-kale", "adversarial-gan"):
        _assert_close(one[kind], two[kind], f"{kind}: 2 processes vs 1")
    _assert_close(one["kale"], two["resumed"], "stopped by 1 process, resumed by 2")
    # the 2-process run's rank-0 checkpoint, resumed by 1 process, ends where the uninterrupted run does
    x, v = _data()
    g = _gebm(seed=99)
    history = gp.fit_kale(g, x, v, resume=tmp_path / "two.pt.ckpt", **KALE)
    _assert_close(one["kale"], _result(g, history), "stopped by 2 processes, resumed by 1")
    assert history.settings["resumed_at_step"] == STOP


def test_gebm_fit_nproc_2_equals_one_process(tmp_path):
    """``gebm fit --nproc 2`` (MLE, then KALE): rank 0 writes a run folder that evaluates, and whose GEBM is
    the one ``gebm fit`` trains in one process, to the tolerance above."""
    from gebm_ppl.cli import main

    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    csv = tmp_path / "toy.csv"
    csv.write_text("a,b\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in x.tolist()) + "\n")
    sets = ["base.hidden_features=8", "base.num_layers=2", "energy.hidden=[16]", "mle.epochs=2", "kale.epochs=2",
            "kale.log_partition_samples=300", "mle.batch_size=16", "kale.batch_size=16"]
    args = ["fit", str(csv), "--device", "cpu", "--no-progress", *[a for s in sets for a in ("--set", s)]]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    assert (tmp_path / "two" / "run.json").is_file()
    assert main(["evaluate", str(tmp_path / "two"), "--num-samples", "500", "--split", "val", "--device", "cpu"]) == 0
    one, two = (gp.GEBM.load(tmp_path / d / "gebm.pt").state_dict() for d in ("one", "two"))
    for name, t in one.items():
        assert float((t - two[name]).abs().max()) <= ATOL, name
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert h1["kale"]["records"][-1]["val_nll"] == pytest.approx(h2["kale"]["records"][-1]["val_nll"], rel=RTOL)


def _worker(out_dir: str, ckpt_in: str) -> None:
    torch.set_num_threads(1)
    out = _runs(Path(ckpt_in), Path(out_dir) / "two.pt.ckpt")
    from gebm_ppl import distributed

    # every rank ends with the same weights and c, bit for bit (DDP all-reduces, evaluations broadcast rank 0's)
    same = {}
    for kind, result in out.items():
        ranks = distributed.all_gather(torch.cat([t.double().flatten() for t in result["state"].values()]))
        same[kind] = bool((ranks == ranks[0]).all())
    if distributed.is_main():
        torch.save({**out, "world_size": distributed.world_size(), "same_on_ranks": same}, Path(out_dir) / "two.pt")
    distributed.barrier()


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
