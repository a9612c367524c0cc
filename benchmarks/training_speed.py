"""MLE vs KALE on one UCI set: validation / test NLL, wall time and steps/s of fit_mle and fit_kale.

    python benchmarks/training_speed.py [--dataset red-wine] [--threads 1] [--kale-epochs 60] [--joint]
                                        [--profile] [--json results.json]
    python benchmarks/training_speed.py --images --before /work/before [...]   (image training, see below)

1. RealNVP (the UCI benchmark's architecture) by ``gp.fit_mle`` with early stopping;
2. GEBM = that RealNVP, frozen, + ``EnergyMLP(spectral_norm="output")`` by ``gp.fit_kale``;
3. with ``--joint``: base and energy by ``gp.fit_kale(train_base=True)``, from the frozen run's energy.

Test NLLs of GEBMs use a fresh importance-sampling estimate of the log-partition (``--eval-samples``
base draws, independent of the ones used for early stopping). ``--profile`` times the parts of one
KALE energy step (base samples, energy forward/backward, gradient penalty) and pooled base sampling.
Timings on a shared machine are noisy; compare runs on the same machine and thread count.

``--images``: seconds per generator step of ``gp.fit_adversarial`` on MNIST-sized nets, the step of an earlier
checkout (``--before PATH``) against this one's and a hand-written floor, alternating in one run; the other
options are those of ``benchmarks/training_speed_images.py`` (``--help`` there).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time

import torch

import gebm_ppl as gp
from gebm_ppl import runs
from gebm_ppl.energies import gradient_penalty
from gebm_ppl.evaluation import evaluate_gebm
from gebm_ppl.kale import kale_energy_loss
from gebm_ppl.training.mle import mean_nll


def gebm_test_nll(gebm, x: torch.Tensor, num_samples: int, seed: int) -> dict:
    """The test figures of :func:`gebm_ppl.evaluate_gebm` (a fresh Â from ``num_samples`` draws, seed 10000 + seed)."""
    ev = evaluate_gebm(gebm, x, num_samples=num_samples, seed=10_000 + seed)
    return {"test_nll": ev.nll, "test_nll_bound": ev.nll_bound, "log_partition": ev.log_partition,
            "log_partition_stderr": ev.log_partition_stderr, "ess": ev.ess}


def profile_kale_step(gebm, x: torch.Tensor, batch_size: int, noise_factor: int, repeats: int = 30) -> dict:
    """Milliseconds per part of one KALE energy step (averaged over ``repeats``)."""
    base, energy, c = gebm.base, gebm.energy, gebm.log_partition
    m = batch_size * noise_factor
    xd = x[:batch_size]
    opt = torch.optim.Adam([*energy.parameters(), c], lr=1e-6)

    def timed(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return 1e3 * (time.perf_counter() - t) / repeats

    def sample():
        with torch.no_grad():
            return base.sample(m)

    xb = sample()

    def pooled():
        with torch.no_grad():
            return base.sample(m * 16)

    def energy_step():
        e = energy(torch.cat([xd, xb]))
        loss = kale_energy_loss(e[:batch_size].double(), e[batch_size:].double(), c.double())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def two_forwards():
        loss = kale_energy_loss(energy(xd).double(), energy(xb).double(), c.double())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def penalty():
        opt.zero_grad()
        gradient_penalty(energy, xd, xb, 0.1).backward()

    return {
        "base_samples_ms": timed(sample),
        "base_samples_pooled_x16_ms_per_step": timed(pooled) / 16,
        "energy_fwd_bwd_one_pass_ms": timed(energy_step),
        "energy_fwd_bwd_two_passes_ms": timed(two_forwards),
        "gradient_penalty_ms": timed(penalty),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--images" in argv:
        import training_speed_images  # beside this file (the script's directory is on sys.path)

        training_speed_images.main([a for a in argv if a != "--images"])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="red-wine")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mle-epochs", type=int, default=300)
    parser.add_argument("--kale-epochs", type=int, default=60)
    parser.add_argument("--energy-lr", type=float, default=None, help="default: fit_kale's")
    parser.add_argument("--noise-factor", type=int, default=20)
    parser.add_argument("--penalty-every", type=int, default=1)
    parser.add_argument("--joint", action="store_true", help="also train base + energy (train_base=True)")
    parser.add_argument("--joint-epochs", type=int, default=20)
    parser.add_argument("--eval-samples", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = gp.data.load(args.dataset, data_dir=args.data_dir, seed=args.seed)
    train, val, test = data.tensors()
    rows = []
    print(f"{data!r}; machine: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}")

    config = runs.validate_config({
        "base": {"class": "RealNVP", "hidden_features": 100, "num_layers": 5, "num_hidden_layers": 1,
                 "scale_bound": 1.0},
        "energy": {"class": "EnergyMLP", "spectral_norm": "output"},
    })
    base = runs.build_base(config, data.dim, seed=args.seed)
    t = time.perf_counter()
    h = runs.train_base_mle(base, data, {"epochs": args.mle_epochs, "batch_size": 100, "lr": 1e-3, "patience": 20},
                            seed=args.seed)
    wall = time.perf_counter() - t
    rows.append({"method": "RealNVP (MLE)", "val_nll": h.best_value, "test_nll": mean_nll(base, test),
                 "epochs": len(h.records), "steps": h.total_steps, "wall_s": wall,
                 "steps_per_s": h.steps_per_second})  # fmt: skip

    gebm = gp.GEBM(copy.deepcopy(base), runs.build_energy(config, data.dim, seed=args.seed))
    kw = dict(noise_factor=args.noise_factor, penalty_every=args.penalty_every)
    if args.energy_lr is not None:
        kw["energy_lr"] = args.energy_lr
    t = time.perf_counter()
    h = runs.train_energy_kale(gebm, data, {"epochs": args.kale_epochs, **kw}, seed=args.seed)
    wall = time.perf_counter() - t
    best = h.records[h.best_epoch - 1]
    rows.append({"method": "GEBM (frozen base, KALE)", "val_nll": h.best_value, "val_nll_bound": best["val_nll_bound"],
                 **gebm_test_nll(gebm, test, args.eval_samples, args.seed), "epochs": len(h.records),
                 "steps": h.total_steps, "wall_s": wall, "steps_per_s": h.steps_per_second})  # fmt: skip

    if args.joint:
        joint = copy.deepcopy(gebm)
        t = time.perf_counter()
        h = runs.train_energy_kale(joint, data, {"train_base": True, "epochs": args.joint_epochs, "n_energy_steps": 10,
                                                 "warmup_energy_steps": 0, **{**kw, "energy_lr": 3e-4}}, seed=args.seed)
        wall = time.perf_counter() - t
        best = h.records[h.best_epoch - 1]
        rows.append({"method": "GEBM (base + energy, KALE)", "val_nll": h.best_value,
                     "val_nll_bound": best["val_nll_bound"], **gebm_test_nll(joint, test, args.eval_samples, args.seed),
                     "epochs": len(h.records), "steps": h.total_steps, "wall_s": wall,
                     "steps_per_s": h.steps_per_second})  # fmt: skip

    columns = [("val_nll", ".3f"), ("val_nll_bound", ".3f"), ("test_nll", ".3f"), ("test_nll_bound", ".3f"),
               ("log_partition_stderr", ".4f"), ("ess", ".0f"), ("epochs", "d"), ("steps", "d"), ("wall_s", ".1f"),
               ("steps_per_s", ".1f")]  # fmt: skip
    print("| method | " + " | ".join(k for k, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for r in rows:
        cells = [format(r[k], fmt) if k in r else "–" for k, fmt in columns]
        print(f"| {r['method']} | " + " | ".join(cells) + " |")
    result = {"dataset": args.dataset, "seed": args.seed, "threads": torch.get_num_threads(), "rows": rows}
    if args.profile:
        prof = profile_kale_step(gebm, train, 100, args.noise_factor)
        result["kale_step_profile_ms"] = prof
        print("KALE energy step, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in prof.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
