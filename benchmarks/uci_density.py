"""UCI density benchmark: RealNVP (MLE), GEBMs trained by KALE, and MAF / NSF references; test NLL in nats.

For each dataset and seed:

* ``realnvp``: a RealNVP base G_θ fitted by maximum likelihood with early stopping;
* ``gebm-frozen``: that base, frozen, with an energy E (and c) trained by KALE;
* ``gebm-joint``: base and energy trained by KALE, starting from the MLE base (and, by default,
  from the frozen GEBM's energy, ``kale_joint.init_energy = "frozen"``);
* ``maf``, ``nsf``: nflows masked autoregressive flow and autoregressive rational-quadratic spline
  flow fitted by maximum likelihood.

Flows report their exact test NLL. GEBMs report the importance-sampling NLL
−mean[log g_θ(x) − E(x)] + Â with Â = logmeanexp(−E(G_θ(z_i))) over ≥ 10⁵ fresh base draws
(its delta-method standard error and ESS beside it), and the KALE upper bound NLL_base − F(E, c).
Every method is also compared per test example with the MLE RealNVP of the same seed (the paired
difference and its standard error). Results: a markdown table on stdout, ``<out>/uci_density.json``,
``<out>/uci_density.h5`` (per-example test NLLs) and ``<out>/uci_density.png``.

Usage::

    python benchmarks/uci_density.py                      # red-wine, white-wine, parkinsons; 1 seed
    python benchmarks/uci_density.py --seeds 3            # seeds 0, 1, 2: error bars over seeds
    python benchmarks/uci_density.py --full               # paper scale: 5 seeds, all kexpfam sets present
    python benchmarks/uci_density.py --datasets red-wine --methods realnvp,gebm-frozen --set kale.epochs=20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # the helpers beside this file; the repository's gebm_ppl

from uci_config import EPOCH_KEYS, apply_override, load_config, parse_override  # noqa: E402
from uci_methods import evaluate, flow_nll, run_flow, run_kale, run_realnvp  # noqa: E402
from uci_report import METHODS, summarise, write_outputs  # noqa: E402

import gebm_ppl as gp  # noqa: E402
from gebm_ppl.data import DataNotFoundError  # noqa: E402
from gebm_ppl.evaluation import paired_difference, stderr  # noqa: E402

DEFAULT_DATASETS = ("red-wine", "white-wine", "parkinsons")
FULL_DATASETS = ("red-wine", "white-wine", "parkinsons", "hepmass", "miniboone")


class MethodFailed(Exception):
    """A method could not produce a finite result (its message goes into the table and JSON)."""


# ------------------------------------------------------------------------------------------ driver
def run_one(dataset: str, seed: int, cfg: dict, methods: list[str], args, bar) -> list[dict]:
    """All methods on one (dataset, seed); failures are recorded, never raised."""
    device = torch.device(args.device)
    progress = False if args.no_progress else None
    try:
        data = gp.data.load(dataset, data_dir=args.data_dir, seed=seed)
    except (OSError, ValueError) as e:  # no data: every method of this (dataset, seed) fails with the reason
        message = f"data: {type(e).__name__}: {str(e).splitlines()[0]}"[:300]
        print(f"{dataset}: {e}", file=sys.stderr)
        bar.update(len(methods))
        return [{"dataset": dataset, "seed": seed, "method": m, "status": "failed", "message": message,
                 "wall_time": 0.0} for m in METHODS if m in methods]  # fmt: skip
    results: dict[str, dict] = {}
    models: dict[str, object] = {}
    per_example: dict[str, np.ndarray] = {}

    def attempt(method: str, fn):
        bar.set_description(f"{dataset} seed {seed}: {method}")
        if not args.quiet and bar.disable:  # off a terminal: one line when each method starts
            print(f"{dataset} seed {seed} {method}: started", file=sys.stderr, flush=True)
        rec = {"dataset": dataset, "seed": seed, "method": method, "status": "ok", "message": None}
        t0 = time.perf_counter()
        try:
            info, model, nll, extra = fn()
            if not np.isfinite(nll).all():
                raise MethodFailed(f"non-finite test NLL on {int((~np.isfinite(nll)).sum())} test examples")
            rec.update(info)
            rec.update(extra)
            rec["test_nll"] = float(nll.mean())
            rec["test_nll_se"] = stderr(nll)
            rec["test_nll_median"] = float(np.median(nll))
            rec["test_nll_max"] = float(nll.max())
            models[method], per_example[method] = model, nll
        except Exception as e:  # a failing method is recorded, never crashes the run
            rec["status"] = "failed"
            rec["message"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            if args.verbose:
                traceback.print_exc()
        rec["wall_time"] = time.perf_counter() - t0
        results[method] = rec
        bar.update(1)
        if not args.quiet:
            what = f"test NLL {rec['test_nll']:.3f}" if rec["status"] == "ok" else f"FAILED: {rec['message']}"
            bar.write(f"{dataset} seed {seed} {method}: {what} ({rec['wall_time']:.0f} s)", file=sys.stderr)

    def flow_result(kind):
        def fn():
            if kind == "realnvp":
                info, model = run_realnvp(data, cfg, seed, device, progress)
            else:
                info, model = run_flow(kind, data, cfg, seed, device, progress)
            return info, model, flow_nll(model, data.test, device), {}

        return fn

    def gebm_result(joint: bool):
        def fn():
            if "realnvp" not in models:
                raise MethodFailed("needs the MLE RealNVP base, which failed or was not run")
            energy = getattr(models.get("gebm-frozen"), "energy", None)
            info, gebm = run_kale(data, models["realnvp"], cfg, seed, device, progress, joint=joint, energy=energy)
            figures, nll = evaluate(gebm, data.test, cfg, seed)
            return info, gebm, nll, figures

        return fn

    needs_base = any(m in methods for m in ("gebm-frozen", "gebm-joint"))
    for method in METHODS:
        if method == "realnvp" and (method in methods or needs_base):
            attempt("realnvp", flow_result("realnvp"))
        elif method in ("maf", "nsf") and method in methods:
            attempt(method, flow_result(method))
        elif method == "gebm-frozen" and method in methods:
            attempt(method, gebm_result(joint=False))
        elif method == "gebm-joint" and method in methods:
            attempt(method, gebm_result(joint=True))

    # paired differences per test example against the references of the same seed: Δ NLL = method − reference
    for method, rec in results.items():
        if rec["status"] != "ok":
            continue
        rec["paired"] = {}
        for ref in ("realnvp", "maf", "nsf"):
            if ref == method or ref not in per_example:
                continue
            # Â's error shifts every example of a GEBM alike
            mean, se = paired_difference(per_example[method], per_example[ref], rec.get("log_partition_stderr", 0.0))
            rec["paired"][ref] = {"mean": mean, "se": se}
    for method, rec in results.items():
        rec["per_example_test_nll"] = per_example.get(method)
        rec["data"] = {"sizes": data.metadata["sizes"], "dim": data.dim, "protocol": data.metadata["protocol"]}
    return [results[m] for m in METHODS if m in results and (m in methods)]


def _load() -> float | None:
    """The 1-minute load average (None where the OS does not report it): runtimes depend on it."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _parse_seeds(text: str | None, default: int) -> list[int]:
    if text is None:
        return list(range(default))
    text = text.strip()
    try:
        if "," in text or text.startswith("["):
            return [int(s) for s in text.strip("[]").split(",") if s.strip()]
        n = int(text)
    except ValueError as e:
        raise ValueError(f"--seeds should be a count >= 1 or a comma-separated list. Got {text!r}.") from e
    if n < 1:
        raise ValueError(f"--seeds should be a count >= 1 or a comma-separated list. Got {text!r}.")
    return list(range(n))


def _parse_list(text: str | None, allowed, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)}. Known: {', '.join(allowed)}.")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/uci_density.py",
        description="UCI density benchmark: RealNVP (MLE) vs GEBMs (KALE) vs MAF / NSF; test NLL in nats.",
    )
    p.add_argument("--datasets", help=f"comma-separated (default: {','.join(DEFAULT_DATASETS)}; "
                                      "--full: every kexpfam dataset whose files are present)")  # fmt: skip
    p.add_argument("--seeds", help="number of seeds (0..N-1) or a comma-separated list (default 1; --full: 5)")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--full", action="store_true", help="paper-scale protocol: the [full] tables of the configs")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--data-dir", help="folder with the UCI files (else $GEBM_DATA_DIR, the user cache, download)")
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--config-dir", help="folder of <dataset>.toml configurations (default models/uci)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[DATASET:]KEY=VALUE",
        help="override a config value, e.g. --set kale.epochs=50 or --set red-wine:energy.lipschitz=2",
    )
    p.add_argument("--epochs", type=int, help=f"set every training length ({', '.join(EPOCH_KEYS)})")
    p.add_argument("--eval-samples", type=int, help="base samples for the log-partition estimate (default 100000)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the networks are small, and one thread per process is "
                        "fastest and does not collapse when other processes share the cores)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.add_argument("--quiet", action="store_true", help="no per-method lines on stderr")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failed methods")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = _parse_list(args.methods, METHODS, "methods") or list(METHODS)
    datasets = _parse_list(args.datasets, gp.data.dataset_names(), "datasets")
    skipped = []
    if datasets is None:
        datasets = list(FULL_DATASETS if args.full else DEFAULT_DATASETS)
        if args.full:  # "when present": keep the datasets whose files are found without downloading
            present = []
            for name in datasets:
                try:
                    gp.data.locate(gp.data.get_spec(name), data_dir=args.data_dir, download=False)
                    present.append(name)
                except (DataNotFoundError, OSError, ValueError) as e:
                    skipped.append({"dataset": name, "reason": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
            datasets = present
    overrides = [parse_override(s) for s in args.set]
    configs = {}
    for name in datasets:
        cfg = load_config(name, full=args.full, config_dir=args.config_dir)
        for key in EPOCH_KEYS if args.epochs else ():
            apply_override(cfg, key, args.epochs)
        if args.eval_samples:
            apply_override(cfg, "eval.num_samples", args.eval_samples)
        for ds, key, value in overrides:
            if ds is None or ds == name:
                apply_override(cfg, key, value)
        configs[name] = cfg
    seed_counts = {configs[n].get("seeds", 1) for n in datasets} or {1}
    seeds = _parse_seeds(args.seeds, max(seed_counts))

    from tqdm.auto import tqdm

    rows: list[dict] = []
    load_start = _load()
    t_start = time.perf_counter()
    n_methods = len(set(methods) | ({"realnvp"} if {"gebm-frozen", "gebm-joint"} & set(methods) else set()))
    with tqdm(total=len(datasets) * len(seeds) * n_methods, unit="fit", disable=args.no_progress or None,
              file=sys.stderr) as bar:  # fmt: skip
        for name in datasets:
            for seed in seeds:
                rows.extend(run_one(name, seed, configs[name], methods, args, bar))
    total = time.perf_counter() - t_start

    run_info = {
        "command": " ".join(["python benchmarks/uci_density.py", *(argv if argv is not None else sys.argv[1:])]),
        "datasets": datasets,
        "skipped_datasets": skipped,
        "seeds": seeds,
        "methods": methods,
        "full": args.full,
        "device": str(args.device),
        "threads": torch.get_num_threads(),
        "wall_time": total,
        "configs": configs,
        "versions": {"gebm_ppl": gp.__version__, "torch": torch.__version__, "python": platform.python_version(),
                     "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_start": load_start,
                    "load_average_end": _load()},
    }  # fmt: skip
    summary = summarise(rows, datasets, methods)
    table = write_outputs(Path(args.out), rows, summary, run_info, plot=not args.no_plot)
    print(table)
    for suffix in ("json", "h5") if args.no_plot else ("json", "h5", "png"):
        print(f"Wrote {Path(args.out) / f'uci_density.{suffix}'}", file=sys.stderr)
    failed = [r for r in rows if r["status"] != "ok"]
    return 1 if rows and len(failed) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
