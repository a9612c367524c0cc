"""Sampling speed on trained UCI GEBMs: Pyro NUTS, NumPyro NUTS, ULA and kinetic Langevin, side by side.

For each dataset (default red-wine and white-wine) a GEBM is loaded (``--checkpoint``) or taken from
the cache ``results/sampling_speed/<dataset>-seed<seed>.pt``, else trained there and then by ``gebm fit``'s pipeline
(:func:`gebm_ppl.runs.fit_run` into ``results/sampling_speed/<dataset>-seed<seed>/``: RealNVP by MLE,
then a KALE energy on the frozen base; the configuration ``models/uci/<dataset>.toml`` with short
training budgets by default). All samplers then target the latent posterior
ν(z) ∝ N(z; 0, I)·exp(−E(G_θ(z))) of the same GEBM with the same number of chains, through
:func:`gebm_ppl.sample_latent`.

Per sampler: wall time (warmup included; NumPyro also without its JIT compilation), CPU time,
gradient evaluations of U at one point (warmup included), the minimum over the data dimensions of the
bulk ESS of x = G_θ(z) (ArviZ), ESS per second, per CPU second and per gradient evaluation. The
gradient floor is the time of one value-and-gradient of U inside a compiled loop, batched over the
chains as vectorised NUTS calls it (best of 10 loops of ``--floor-repeats`` calls), times the number of
batched calls NUTS needed (its gradient count / chains; NumPyro's step-size search is not counted).
Printed as a markdown table per dataset with the NumPyro / Pyro ESS/s ratio (target ≥ 20) and
NumPyro's time over the floor (target ≤ 1.5); written atomically to ``results/sampling_speed.json``.

Usage::

    python benchmarks/sampling_speed.py                          # quick: a couple of minutes once trained
    python benchmarks/sampling_speed.py --datasets red-wine --checkpoint my_gebm.pt
    python benchmarks/sampling_speed.py --samples 2000 --warmup 1000 --pyro-samples 500 --pyro-warmup 500
    python benchmarks/sampling_speed.py --chain-method parallel   # one XLA host device per chain
    python benchmarks/sampling_speed.py --compilation-cache /tmp/jax-cache   # twice: warm compilation

At about 340 lines this module is one command: its options, the runs of each sampler and the
report (the measures are in ``sampling_measures.py``, the training in :func:`gebm_ppl.runs.fit_run`).

Threads: torch and XLA run single-threaded by default (``--threads``), so that the comparison is
one core against one core; timings on a shared machine are noisy.

Length: a benchmark script (models, timing, table, JSON/plot) read top to bottom; the measurements
themselves are in sampling_measures.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
sys.path[:0] = [str(_HERE), str(_ROOT)]  # the helpers beside this file; the repository's gebm_ppl

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sampling_measures import gradient_floor, record  # noqa: E402

import gebm_ppl as gp  # noqa: E402
from gebm_ppl._io import atomic_open  # noqa: E402

DATASETS = ("red-wine", "white-wine")
CONFIG_DIR = _ROOT / "models" / "uci"
SAMPLERS = ("numpyro-nuts", "pyro-nuts", "ula", "kinetic")


# ------------------------------------------------------------------------------------------ setup
def _configure_threads(threads: int, host_devices: int) -> None:
    """Thread counts for torch and XLA, and XLA's host device count: before JAX is first imported."""
    torch.set_num_threads(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    if host_devices > 1:
        import numpyro

        numpyro.set_host_device_count(host_devices)


def _train(name: str, args) -> tuple[gp.GEBM, dict]:
    """``gebm fit``'s pipeline (:func:`gebm_ppl.runs.fit_run`) with the dataset's configuration and short budgets."""
    from gebm_ppl import runs

    config = runs.apply_overrides(runs.load_config(CONFIG_DIR / f"{name}.toml"),
                                  [f"mle.epochs={args.mle_epochs}", f"kale.epochs={args.kale_epochs}"])
    data = runs.load_data(name, args.seed, data_dir=args.data_dir)
    t0 = time.perf_counter()
    run = runs.fit_run(Path(args.cache_dir) / f"{name}-seed{args.seed}", data, config, seed=args.seed,
                       progress=False, overwrite=args.retrain)
    summary = run.info["summary"]
    info = {
        "trained": True,
        "config": str(CONFIG_DIR / f"{name}.toml"),
        "run_dir": str(run.path),
        "mle_epochs": summary["mle"]["epochs"],
        "kale_epochs": summary["kale"]["epochs"],
        "base_val_nll": summary["mle"]["best_val_nll"],
        "gebm_val_nll": summary["kale"]["best_val_nll"],
        "train_time": time.perf_counter() - t0,
    }
    return run.gebm, info


def _get_gebm(name: str, args) -> tuple[gp.GEBM, dict]:
    path = args.checkpoint.get(name)
    if path is not None:
        return gp.GEBM.load(path), {"checkpoint": str(path), "trained": False}
    cache = Path(args.cache_dir) / f"{name}-seed{args.seed}.pt"
    if cache.is_file() and not args.retrain:
        extra = torch.load(cache, weights_only=True)["extra"]
        return gp.GEBM.load(cache), {"checkpoint": str(cache), "trained": False, **extra}
    print(f"{name}: training a GEBM (MLE ≤ {args.mle_epochs} epochs, KALE ≤ {args.kale_epochs} epochs) ...",
          file=sys.stderr)  # fmt: skip
    gebm, info = _train(name, args)
    gebm.save(cache, **{k: v for k, v in info.items() if k != "trained"})
    return gebm, {"checkpoint": str(cache), **info}


def run_dataset(name: str, args) -> dict:
    gebm, info = _get_gebm(name, args)
    gebm.eval()
    c = args.chains
    common = {"num_chains": c, "seed": args.seed}
    runs = {
        "numpyro-nuts": lambda: gp.sample_latent(
            gebm,
            "nuts",
            backend="numpyro",
            num_samples=args.samples,
            warmup_steps=args.warmup,
            chain_method=args.chain_method,
            **common,
        ),
        "pyro-nuts": lambda: gp.sample_latent(
            gebm,
            "nuts",
            backend="pyro",
            num_samples=args.pyro_samples,
            warmup_steps=args.pyro_warmup,
            **common,
        ),
        "ula": lambda: gp.sample_latent(
            gebm,
            "ula",
            num_samples=args.langevin_samples,
            warmup_steps=args.warmup,
            step_size=args.ula_step,
            **common,
        ),
        "kinetic": lambda: gp.sample_latent(
            gebm,
            "kinetic",
            num_samples=args.langevin_samples,
            warmup_steps=args.warmup,
            step_size=args.kinetic_step,
            friction=args.friction,
            **common,
        ),
    }
    records = {}
    for sampler in args.samplers:
        print(f"{name}: {sampler} ...", file=sys.stderr, flush=True)
        cpu0 = time.process_time()
        idata = runs[sampler]()
        records[sampler] = record(idata, cpu_time=time.process_time() - cpu0)
    floor = gradient_floor(gebm, c, args.floor_repeats)
    result = {"dataset": name, "model": info, "gradient_time": floor, "samplers": records}
    npy = records.get("numpyro-nuts")
    if npy is not None:
        # vectorised: one chain-batched call per leapfrog step of all chains (lockstep, on average);
        # parallel: each device evaluates one point per step, the devices side by side
        per_call = floor["jax_batched"] if args.chain_method == "vectorized" else floor["jax_single"]
        npy["floor_call_time"] = per_call
        npy["floor_time"] = per_call * npy["grad_evals"] / c
        npy["overhead_over_floor"] = npy["run_time"] / npy["floor_time"]
        npy["overhead_over_floor_with_compile"] = npy["wall_time"] / npy["floor_time"]
        npy["floor_time_lockstep"] = npy["floor_time"] * npy["lockstep_factor"]
        if "pyro-nuts" in records:
            pyro = records["pyro-nuts"]
            result["numpyro_over_pyro_ess_per_s"] = npy["ess_per_s"] / pyro["ess_per_s"]
            result["numpyro_over_pyro_ess_per_s_run"] = npy["ess_per_s_run"] / pyro["ess_per_s"]
            result["numpyro_over_pyro_ess_per_cpu_s"] = npy["ess_per_cpu_s"] / pyro["ess_per_cpu_s"]
    return result


# ------------------------------------------------------------------------------------------ report
def _table(result: dict) -> str:
    lines = [
        "| sampler | chains × draws | wall time (s) | compile (s) | grad evals | min bulk ESS (x) | ESS/s "
        "| ESS/s excl. compile | ESS / grad | max R-hat | CPU time (s) | ESS / CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sampler, r in result["samplers"].items():
        lines.append(
            f"| {sampler} | {r['chains']} × {r['draws']} | {r['wall_time']:.1f} | {r['compile_time']:.1f} "
            f"| {r['grad_evals']} | {r['min_ess_bulk_x']:.0f} | {r['ess_per_s']:.1f} "
            f"| {r['ess_per_s_run']:.1f} | {r['ess_per_grad']:.4f} | {r['max_rhat_x']:.3f} "
            f"| {r['cpu_time']:.1f} | {r['ess_per_cpu_s']:.1f} |"
        )
    npy = result["samplers"].get("numpyro-nuts")
    g = result["gradient_time"]
    lines.append("")
    lines.append(
        f"Value and gradient of U: JAX {g['jax_batched'] * 1e6:.0f} µs for the {g['chains']} chains batched "
        f"inside a compiled loop ({g['jax_batched_call'] * 1e6:.0f} µs as one jitted call from Python), "
        f"{g['jax_single'] * 1e6:.0f} µs for one point; torch autograd "
        f"{g['torch_batched'] * 1e6:.0f} µs batched, {g['torch_single'] * 1e6:.0f} µs for one point."
    )
    if npy is not None:
        lines.append(
            f"NumPyro NUTS: gradient floor {npy['floor_time']:.2f} s ({npy['grad_evals']} gradients / "
            f"{npy['chains']} chains × {npy['floor_call_time'] * 1e6:.0f} µs); run time (excl. compile) "
            f"{npy['run_time']:.2f} s = **{npy['overhead_over_floor']:.2f}× the floor** (target ≤ 1.5), "
            f"{npy['overhead_over_floor_with_compile']:.2f}× with compilation ({npy['compile_time']:.1f} s). "
            f"Lockstep factor of the chains {npy['lockstep_factor']:.2f} "
            f"(floor with lockstep {npy['floor_time_lockstep']:.2f} s); mean leapfrog steps per draw "
            f"{npy['mean_n_steps']:.1f}, step size {npy['step_size']:.3f}, {npy['divergences']} divergences."
        )
    if "numpyro_over_pyro_ess_per_s" in result:
        lines.append(
            f"NumPyro / Pyro NUTS ESS/s: **{result['numpyro_over_pyro_ess_per_s']:.1f}×** with compilation, "
            f"{result['numpyro_over_pyro_ess_per_s_run']:.1f}× without (target ≥ 20); per CPU second "
            f"{result['numpyro_over_pyro_ess_per_cpu_s']:.1f}× with compilation."
        )
    return "\n".join(lines)


def _machine(args) -> dict:
    import jax
    import numpyro

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
    }


def _default_data_dir() -> str | None:
    if os.environ.get("GEBM_DATA_DIR"):
        return None  # gp.data.load reads it
    shared = _ROOT.parent / "shared" / "data" / "uci"
    return str(shared) if shared.is_dir() else None


def _checkpoint_label(path: Path) -> str:
    """The dataset of a checkpoint if its run directory names it (``gebm fit``), else the file's name."""
    run_json = path.parent / "run.json"
    try:
        name = json.loads(run_json.read_text()).get("dataset", {}).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return name or path.stem


def _parse_checkpoints(values: list[str], datasets: list[str] | None) -> tuple[dict, list[str]]:
    """``--checkpoint [DATASET=]PATH`` values → ({label: path}, the datasets to run)."""
    out = {}
    for v in values:
        if "=" in v:
            name, path = v.split("=", 1)
        elif datasets is not None and len(datasets) == 1:
            name, path = datasets[0], v
        elif datasets is None:  # only the given checkpoints are measured
            name, path = _checkpoint_label(Path(v)), v
        else:
            raise SystemExit(f"--checkpoint {v!r}: with several --datasets, write DATASET=PATH.")
        if not Path(path).is_file():
            raise SystemExit(f"--checkpoint: no file {path!r}.")
        out[name] = path
    if datasets is None:
        datasets = list(out) if values else list(DATASETS)
    return out, datasets


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=None,
                   help=f"default: {' '.join(DATASETS)}; only the --checkpoint models if given")  # fmt: skip
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--checkpoint", action="append", default=[], metavar="[DATASET=]PATH",
                   help="a GEBM checkpoint (GEBM.save) to use instead of the cached/trained one")  # fmt: skip
    p.add_argument("--data-dir", default=_default_data_dir(),
                   help="folder with the UCI files (default: $GEBM_DATA_DIR, else ../shared/data/uci beside "
                   "the repository, else the user cache or a download)")  # fmt: skip
    p.add_argument("--cache-dir", default=str(_ROOT / "results" / "sampling_speed"), help="trained GEBMs")
    p.add_argument("--retrain", action="store_true", help="train again even if a cached GEBM exists")
    p.add_argument("--mle-epochs", type=int, default=100)
    p.add_argument("--kale-epochs", type=int, default=20)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--samples", type=int, default=1000, help="NumPyro NUTS draws per chain")
    p.add_argument("--warmup", type=int, default=500, help="NumPyro NUTS warmup / Langevin burn-in per chain")
    p.add_argument("--pyro-samples", type=int, default=150, help="Pyro NUTS draws per chain")
    p.add_argument("--pyro-warmup", type=int, default=150, help="Pyro NUTS warmup per chain")
    p.add_argument("--langevin-samples", type=int, default=2000, help="ULA / kinetic draws per chain")
    p.add_argument("--ula-step", type=float, default=0.05)
    p.add_argument("--kinetic-step", type=float, default=0.2)
    p.add_argument("--friction", type=float, default=1.0)
    p.add_argument("--chain-method", choices=("vectorized", "parallel"), default="vectorized")
    p.add_argument("--threads", type=int, default=1, help="torch and XLA threads (default 1)")
    p.add_argument("--compilation-cache", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache (a second run then skips most of NumPyro's "
                   "compilation); default: none, so that the cold cost is measured")  # fmt: skip
    p.add_argument("--floor-repeats", type=int, default=2000, help="timed gradient calls for the floor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(_ROOT / "results" / "sampling_speed.json"))
    args = p.parse_args(argv)
    args.checkpoint, args.datasets = _parse_checkpoints(args.checkpoint, args.datasets)
    _configure_threads(args.threads, args.chains if args.chain_method == "parallel" else 1)
    if args.compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)

    results = []
    t0 = time.perf_counter()
    for name in args.datasets:
        result = run_dataset(name, args)
        results.append(result)
        print(f"\n### {name}\n")
        print(_table(result), flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "checkpoint"}
    report = {
        "benchmark": "sampling_speed",
        "machine": _machine(args),
        "settings": settings,
        "total_time": time.perf_counter() - t0,
        "results": results,
    }
    with atomic_open(args.out, "w") as f:
        json.dump(report, f, indent=2, default=lambda o: float(o) if isinstance(o, np.floating) else str(o))
    print(f"\nwrote {args.out}")
    ratios = [r["numpyro_over_pyro_ess_per_s"] for r in results if "numpyro_over_pyro_ess_per_s" in r]
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"NumPyro / Pyro NUTS ESS/s over datasets: {', '.join(f'{x:.1f}×' for x in ratios)} "
              f"(geometric mean {geo:.1f}×; target ≥ 20)")  # fmt: skip
    return report


if __name__ == "__main__":
    main()
