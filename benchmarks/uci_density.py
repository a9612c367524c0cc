"""UCI density benchmark: MLE flows with validation-chosen regularisation, GEBMs by KALE on them; test NLL in nats.

For each dataset and seed (one job, :func:`uci_job.run_job`), on the same split:

* ``realnvp``, ``maf``, ``nsf``: the flows of the ``[realnvp]``, ``[maf]``, ``[nsf]`` tables (any registered
  base, built by :func:`gebm_ppl.runs.build_base`: the quick default's are RealNVP, zuko's MAF and a coupling
  zuko NSF), by maximum likelihood as configured (AdamW, input noise, plateau schedule, early stopping);
* ``realnvp-reg``, ``maf-reg``, ``nsf-reg``: the same flows with regularisation chosen on the validation
  split only: a coordinate search over the grid of ``[select.flow]`` (Gaussian input noise σ, weight
  decay, width; the same grid for every flow; the configured flow is its first point);
* ``gebm-frozen``: the chosen flow of kind ``[select] gebm_base`` (``"best"``: the lowest validation NLL of
  all families) as base, frozen, with an energy E (and c) trained by KALE on a pool of base draws, its
  settings (``[select.energy]``) chosen by the GEBM's validation NLL;
* ``gebm-joint``: base and energy trained on by KALE from there (``--full``, or ``--methods``);
* ``gebm-realnvp``, ``gebm-maf``, ``gebm-nsf``: a frozen GEBM on each family's chosen flow (``--full``, or
  ``--methods``).

Flows report their exact test NLL; GEBMs the importance-sampling NLL −mean[log g_θ(x) − E(x)] + Â with
Â from ≥ 10⁵ fresh base draws (standard error and ESS beside it) and the KALE bound NLL_base − F(E, c).
NLLs are in the whitened coordinates the models see and in the data's original units
(NLL_orig = NLL_white − log|det W|, :func:`gebm_ppl.units.nll_to_original`). Each method is compared per
test example with the flows of the same split (paired differences, pooled over seeds), with median and
trimmed means and the test points that dominate the means named. Jobs run in ``--workers`` processes
(one torch thread each); every job seeds itself, so results do not depend on the worker count.
Results: a markdown table on stdout, ``<out>/uci_density.json``, ``<out>/uci_density.h5`` (per-example
test NLLs) and ``<out>/uci_density.png``.

Usage::

    python benchmarks/uci_density.py                      # red-wine, white-wine, parkinsons; 3 seeds, 2 workers
    python benchmarks/uci_density.py --seeds 1            # one seed
    python benchmarks/uci_density.py --full               # paper scale: 5 seeds, all kexpfam sets present
    python benchmarks/uci_density.py --protocol kexpfam-paper   # the GEBM paper's preprocessing (models/uci-paper)
    python benchmarks/uci_density.py --datasets red-wine --methods realnvp,gebm-frozen --set kale.epochs=20

Length: the driver (arguments, configurations, the worker pool, run metadata) in one place.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # the helpers beside this file; the repository's gebm_ppl

from uci_config import (  # noqa: E402
    CONFIG_DIR,
    EPOCH_KEYS,
    PAPER_CONFIG_DIR,
    apply_override,
    apply_overrides,
    load_config,
    parse_override,
)
from uci_job import FAMILY_GEBMS, METHODS, check_select, job_entry, worker_init  # noqa: E402
from uci_report import summarise, write_outputs  # noqa: E402

import gebm_ppl as gp  # noqa: E402
from gebm_ppl.data import DataNotFoundError  # noqa: E402

DEFAULT_DATASETS = ("red-wine", "white-wine", "parkinsons")
FULL_DATASETS = ("red-wine", "white-wine", "parkinsons", "hepmass", "miniboone")
QUICK_METHODS = tuple(m for m in METHODS if m != "gebm-joint" and m not in FAMILY_GEBMS)
"""The quick default's methods: the flows and the GEBM on the best validation flow; ``--full`` runs every method
(gebm-joint and a GEBM on each family's flow too); ``--methods`` chooses any."""


def run_jobs(jobs: list[tuple], workers: int, threads: int, bar) -> dict[tuple[str, int], list[dict]]:
    """Run the (dataset, seed) jobs, in ``workers`` processes when > 1 (spawned, ``threads`` torch threads
    each); longest-first by the configuration's data size is the caller's order. Returns rows per job."""
    out = {}
    if workers <= 1:
        for job in jobs:
            dataset, seed, rows = job_entry(job)
            out[(dataset, seed)] = rows
            bar.update(1)
        return out
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=worker_init,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = [pool.submit(job_entry, job) for job in jobs]
        for f in as_completed(futures):
            dataset, seed, rows = f.result()
            out[(dataset, seed)] = rows
            bar.update(1)
    return out


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
    p.add_argument("--seeds", help="number of seeds (0..N-1) or a comma-separated list (default 3; --full: 5)")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default: "
                                     f"{','.join(QUICK_METHODS)}; --full: all)")
    p.add_argument("--full", action="store_true", help="paper-scale protocol: the [full] tables of the configs")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--data-dir", help="folder with the UCI files (else $GEBM_DATA_DIR, the user cache, download)")
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--config-dir", help="folder of <dataset>.toml configurations (default models/uci; "
                                        "models/uci-paper with --protocol kexpfam-paper when it exists)")
    p.add_argument("--protocol", help="data protocol passed to gebm_ppl.data.load (default: the dataset's own, "
                                      "kexpfam; kexpfam-paper: the GEBM paper's preprocessing)")
    p.add_argument("--workers", type=int, default=2,
                   help="(dataset, seed) jobs run in this many processes (default 2; results do not depend on it)")
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
    if args.workers < 1:
        raise SystemExit(f"--workers should be >= 1. Got {args.workers}.")
    config_dir = args.config_dir
    if config_dir is None and args.protocol == "kexpfam-paper" and PAPER_CONFIG_DIR.is_dir():
        config_dir = PAPER_CONFIG_DIR
    methods = _parse_list(args.methods, METHODS, "methods") or list(METHODS if args.full else QUICK_METHODS)
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
        cfg = load_config(name, full=args.full, config_dir=config_dir)
        for key in EPOCH_KEYS if args.epochs else ():
            apply_override(cfg, key, args.epochs)
        if args.eval_samples:
            apply_override(cfg, "eval.num_samples", args.eval_samples)
        apply_overrides(cfg, name, overrides)
        try:
            check_select(cfg)
        except ValueError as e:
            raise SystemExit(f"{cfg.get('source', name)}: {e}") from e
        configs[name] = cfg
    seed_counts = {configs[n].get("seeds", 1) for n in datasets} or {1}
    seeds = _parse_seeds(args.seeds, max(seed_counts))

    from tqdm.auto import tqdm

    opts = {"device": args.device, "data_dir": args.data_dir, "protocol": args.protocol, "quiet": args.quiet,
            "verbose": args.verbose}  # fmt: skip
    # costlier datasets first (their configs' relative_cost): a shorter finish on few workers; results do not
    # depend on the order, since every job seeds itself
    order = sorted(datasets, key=lambda n: -float(configs[n].get("relative_cost", 1.0)))
    jobs = [(name, seed, configs[name], methods, opts) for name in order for seed in seeds]
    load_start = _load()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    with tqdm(total=len(jobs), unit="job", disable=args.no_progress or None, file=sys.stderr) as bar:
        by_job = run_jobs(jobs, min(args.workers, len(jobs)), args.threads or 1, bar)
    total = time.perf_counter() - t_start
    rows = [r for name in datasets for seed in seeds for r in by_job[(name, seed)]]  # a fixed order
    job_cpu = {f"{name}/seed{seed}": next((r["job"]["cpu_time"] for r in by_job[(name, seed)] if "job" in r), 0.0)
               for name in datasets for seed in seeds}  # fmt: skip

    run_info = {
        "command": " ".join(["python benchmarks/uci_density.py", *(argv if argv is not None else sys.argv[1:])]),
        "datasets": datasets,
        "skipped_datasets": skipped,
        "seeds": seeds,
        "methods": methods,
        "full": args.full,
        "device": str(args.device),
        "threads": args.threads or 1,
        "workers": min(args.workers, len(jobs)),
        "protocol": args.protocol,
        "config_dir": str(config_dir or CONFIG_DIR),
        "wall_time": total,
        "cpu_time": {"jobs": job_cpu, "total_jobs": float(sum(job_cpu.values())),
                     "driver": time.process_time() - cpu_start},
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
