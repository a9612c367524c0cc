"""Cost growth of GEBM training and evaluation with the data size: rows × dims (× ranks), data streamed from HDF5.

    python benchmarks/scaling.py                      # quick: 1e4, 1e5 rows; POWER (6) and BSDS300 (63) shapes
    python benchmarks/scaling.py --full               # 1e4, 1e5, 1e6 rows; all five MAF shapes; ranks 1, 2
    python benchmarks/scaling.py --rows 10000 300000 --sets power gas --ranks 1 2 --md docs/results/scaling.md

For every point (data set shape, rows N, ranks W, data source) a fresh Python process builds the GEBM
of that set's benchmark configuration (``models/uci/<set>.toml``: RealNVP base, EnergyMLP energy, the
KALE batch size and noise factor), reads synthetic data of the set's MAF shape (POWER 6 dims, GAS 8,
HEPMASS 21, MINIBOONE 43, BSDS300 63; a seeded correlated Gaussian written once to HDF5, in the
contiguous float32 layout of the split cache) as a :class:`gebm_ppl.data.H5Array`, and measures

* ``kale``: one epoch of :func:`gebm_ppl.fit_kale` (frozen base) over N rows: the time of the
  epoch's energy steps (``epoch_time``) and of the end-of-epoch evaluation (F on all N rows and Â);
* ``nll``: :func:`gebm_ppl.evaluate_gebm` on N rows (base NLL, energy, and Â from ``--eval-samples``
  base draws, a fixed cost);

and its peak resident memory (``resource.getrusage(...).ru_maxrss`` of that process) against the
resident memory after imports and model construction. ``--compare-memory`` (on by default) adds,
for the last set, the same points with the rows loaded into memory (a tensor), so the table shows
the memory the streaming saves. With W > 1 the point runs under ``torch.distributed.run`` (gloo, W processes of
``--threads`` threads each): ``fit_kale`` trains data-parallel (:mod:`gebm_ppl.distributed`) and
``evaluate_gebm(rank=, world_size=)`` shards rows and base draws; times are rank 0's, memory the
largest rank's. The networks are untrained (cost does not depend on the weights' values).

The fitted exponent is the least-squares slope of log time against log rows per set and quantity
(W = 1, streamed): 1 means linear growth. Outputs: a markdown table on stdout (and ``--md``), all
measurements as JSON (``--json``, default ``results/scaling.json``) and a log-log plot (``--plot``).
Absolute times on a shared machine are indicative; the ratios and exponents are the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {"power": 6, "gas": 8, "hepmass-maf": 21, "miniboone-maf": 43, "bsds300": 63}
QUICK = {"rows": [10_000, 100_000], "sets": ["power", "bsds300"], "ranks": [1, 2]}
FULL = {"rows": [10_000, 100_000, 1_000_000], "sets": list(SETS), "ranks": [1, 2]}
KINDS = ("kale", "nll")


# ------------------------------------------------------------------------------ synthetic data
def write_synthetic(path: Path, rows: int, dims: int, seed: int = 0) -> None:
    """A seeded correlated Gaussian [rows, dims] (float32, contiguous dataset ``x``), written 65,536 rows at a time."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed + dims)
    mix = rng.standard_normal((dims, dims)) / math.sqrt(dims)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        ds = f.create_dataset("x", shape=(rows, dims), dtype="float32")
        for start in range(0, rows, 65_536):
            n = min(65_536, rows - start)
            ds[start : start + n] = (rng.standard_normal((n, dims)) @ mix).astype(np.float32)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ one point (subprocess)
def _config(name: str) -> dict:
    with open(ROOT / "models" / "uci" / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_point(args: argparse.Namespace) -> dict:
    """Measure one (kind, set, rows, source) point in this process; under torchrun, one rank of it."""
    import torch

    import gebm_ppl as gp
    from gebm_ppl.data import H5Array

    torch.set_num_threads(args.threads)
    rank, world = 0, int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # under torch.distributed.run: join the group (fit_kale then trains data-parallel)
        from gebm_ppl import distributed

        distributed.init()
        rank, world = distributed.rank(), distributed.world_size()
    cfg = _config(args.set)
    dims = SETS[args.set]
    torch.manual_seed(0)
    base = gp.RealNVP(dims, **cfg["realnvp"])
    gebm = gp.GEBM(base, gp.EnergyMLP(dims, **cfg["energy"]))
    x = H5Array(args.data, "x")
    baseline = _rss_mib()
    if args.source == "memory":
        x = torch.cat(list(x.split(65_536)))
    out = {"kind": args.kind, "set": args.set, "dims": dims, "rows": args.rows, "ranks": world,
           "source": args.source, "threads": args.threads}  # fmt: skip
    t = time.perf_counter()
    if args.kind == "kale":
        kale = cfg["kale"]
        history = gp.fit_kale(
            gebm, x, None, epochs=1, batch_size=kale["batch_size"], noise_factor=kale["noise_factor"],
            energy_lr=kale["energy_lr"], penalty=kale["penalty"], log_partition_samples=args.eval_samples,
            patience=None, progress=False, seed=0,
        )  # fmt: skip
        record = history.records[-1]
        out.update(time_s=record["epoch_time"], eval_time_s=record["eval_time"], steps=history.total_steps,
                   batch_size=kale["batch_size"], noise_factor=kale["noise_factor"])  # fmt: skip
    else:
        ev = gp.evaluate_gebm(gebm, x, num_samples=args.eval_samples, batch_size=10_000, rank=rank, world_size=world)
        out.update(time_s=time.perf_counter() - t, nll=ev.nll, eval_samples=args.eval_samples)
    out["wall_s"] = time.perf_counter() - t
    peak = torch.tensor([_rss_mib(), _rss_mib() - baseline], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    out["peak_rss_mib"], out["rss_growth_mib"] = float(peak[0]), float(peak[1])
    if rank == 0:
        Path(args.result).write_text(json.dumps(out))
    return out


def measure(kind: str, name: str, rows: int, ranks: int, source: str, data: Path, opts: argparse.Namespace) -> dict:
    """Run one point in a fresh process (``torch.distributed.run`` for ranks > 1) and return its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "point.json"
        point = [__file__, "--point", "--kind", kind, "--set", name, "--rows", str(rows), "--source", source,
                 "--data", str(data), "--result", str(result), "--threads", str(opts.threads),
                 "--eval-samples", str(opts.eval_samples)]  # fmt: skip
        if ranks > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *point]
        else:
            cmd = [sys.executable, *point]
        env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"point {kind} {name} rows={rows} ranks={ranks} failed:\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


# ------------------------------------------------------------------------------ report
def exponents(points: list[dict]) -> list[dict]:
    """Least-squares slope of log time vs log rows per (set, kind), streamed, one rank."""
    import numpy as np

    out = []
    for name in dict.fromkeys(p["set"] for p in points):
        for kind in KINDS:
            sel = sorted((p["rows"], p["time_s"], p["rss_growth_mib"]) for p in points
                         if (p["set"], p["kind"], p["ranks"], p["source"]) == (name, kind, 1, "h5"))  # fmt: skip
            if len(sel) >= 2:
                r, t = np.log10([s[0] for s in sel]), np.log10([s[1] for s in sel])
                slope = float(np.polyfit(r, t, 1)[0])
                out.append({"set": name, "dims": SETS[name], "kind": kind, "exponent": slope,
                            "rows": [s[0] for s in sel], "rss_growth_mib": [s[2] for s in sel]})  # fmt: skip
    return out


def _find(points: list[dict], **want) -> dict | None:
    return next((p for p in points if all(p[k] == v for k, v in want.items())), None)


def summary(points: list[dict], slopes: list[dict]) -> list[str]:
    """Sentences computed from the measurements: exponents, streamed vs in-memory memory, ranks speed-up."""
    label = {"kale": "KALE epoch", "nll": "test NLL"}
    out = []
    for kind in KINDS:
        parts = [f"{s['set']} ({s['dims']} dims) {s['exponent']:.2f}" for s in slopes if s["kind"] == kind]
        if parts:
            out.append(f"* Fitted exponent of the {label[kind]} time in the rows: " + ", ".join(parts) + ".")
    for kind in KINDS:
        for mem in (p for p in points if p["source"] == "memory" and p["kind"] == kind):
            h5 = _find(points, kind=kind, set=mem["set"], rows=mem["rows"], ranks=1, source="h5")
            if h5 is not None and mem["rows"] == max(p["rows"] for p in points):
                data = mem["rows"] * mem["dims"] * 4 / 2**20
                out.append(f"* {label[kind]}, {mem['set']}, {mem['rows']:,} rows ({data:.0f} MiB of float32): peak "
                           f"memory growth {h5['rss_growth_mib']:.0f} MiB streamed vs {mem['rss_growth_mib']:.0f} MiB "
                           f"in memory; time {h5['time_s']:.2f} s vs {mem['time_s']:.2f} s.")  # fmt: skip
    for p in points:
        if p["ranks"] > 1:
            one = _find(points, kind=p["kind"], set=p["set"], rows=p["rows"], ranks=1, source=p["source"])
            if one is not None:
                out.append(f"* {label[p['kind']]}, {p['set']}, {p['rows']:,} rows: {p['ranks']} ranks take "
                           f"{p['time_s']:.2f} s vs {one['time_s']:.2f} s on one (speed-up "
                           f"{one['time_s'] / p['time_s']:.2f}×).")  # fmt: skip
    return out


def markdown(points: list[dict], slopes: list[dict], meta: dict) -> str:
    """The results page: table of points, fitted exponents, computed summary, command and machine."""
    lines = [
        "| quantity | set (dims) | rows | ranks | data | time (s) | eval (s) | steps | peak RSS (MiB) | growth (MiB) |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    label = {"kale": "KALE epoch", "nll": "test NLL (with Â)"}
    for p in sorted(points, key=lambda p: (p["kind"], SETS[p["set"]], p["rows"], p["ranks"], p["source"])):
        ev = f"{p['eval_time_s']:.2f}" if "eval_time_s" in p else "–"
        steps = str(p.get("steps", "–"))
        lines.append(f"| {label[p['kind']]} | {p['set']} ({p['dims']}) | {p['rows']:,} | {p['ranks']} | "
                     f"{'HDF5 stream' if p['source'] == 'h5' else 'in memory'} | {p['time_s']:.2f} | {ev} | {steps} | "
                     f"{p['peak_rss_mib']:.0f} | {p['rss_growth_mib']:.0f} |")  # fmt: skip
    lines += ["", "| quantity | set (dims) | fitted exponent (log time / log rows) | rows |", "|---|---|---:|---|"]
    for s in slopes:
        lines.append(f"| {label[s['kind']]} | {s['set']} ({s['dims']}) | {s['exponent']:.2f} | "
                     f"{', '.join(f'{r:,}' for r in s['rows'])} |")  # fmt: skip
    lines += ["", *summary(points, slopes)]
    lines += ["", f"Command: `{meta['command']}`; {meta['machine']}; load average (1, 5, 15 min) before / after: "
                  f"{meta['load_before']} / {meta['load_after']}; total {meta['total_s']:.0f} s.",
              "", "Time: the KALE epoch's energy steps (`eval`: its end-of-epoch F on all rows and Â) or the "
                  "whole `evaluate_gebm` call; growth: peak RSS minus the RSS after imports and model "
                  "construction."]  # fmt: skip
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, kind, title in ((axes[0], "kale", "one KALE epoch"), (axes[1], "nll", "test NLL (with Â)")):
        for name in dict.fromkeys(p["set"] for p in points):
            for ranks, style in ((1, "o-"), (2, "s--")):
                sel = sorted((p["rows"], p["time_s"]) for p in points if p["set"] == name and p["kind"] == kind
                             and p["ranks"] == ranks and p["source"] == "h5")  # fmt: skip
                if sel:
                    lbl = f"{name} ({SETS[name]} dims)" + (f", {ranks} ranks" if ranks > 1 else "")
                    ax.loglog(*zip(*sel, strict=True), style, label=lbl)
        ax.set(xlabel="rows", ylabel="seconds", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    for p_kind, marker in (("kale", "o"), ("nll", "^")):
        for source, style in (("h5", "-"), ("memory", ":")):
            for name in dict.fromkeys(p["set"] for p in points):
                sel = sorted((p["rows"], max(p["rss_growth_mib"], 0.5)) for p in points if p["set"] == name
                             and p["kind"] == p_kind and p["ranks"] == 1 and p["source"] == source)  # fmt: skip
                if sel:
                    src = "stream" if source == "h5" else "in memory"
                    ax.loglog(*zip(*sel, strict=True), marker + style, label=f"{p_kind}, {name}, {src}")
    ax.set(xlabel="rows", ylabel="peak RSS growth (MiB)", title="memory over the post-import baseline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=fmt)
    p.add_argument("--full", action="store_true", help="rows 1e4..1e6, all five MAF shapes, ranks 1 and 2")
    p.add_argument("--rows", type=int, nargs="+", help="row counts (default: quick 1e4 1e5)")
    p.add_argument("--sets", nargs="+", choices=list(SETS), help="MAF shapes (default: quick power bsds300)")
    p.add_argument("--ranks", type=int, nargs="+", help="ranks at the largest rows of the first set (default 1 2)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="what to measure (default both)")
    p.add_argument("--compare-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="also the last set with the rows loaded in memory (default: on)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--eval-samples", type=int, default=20_000, help="base draws M behind Â (default 20000)")
    p.add_argument("--workdir", type=Path, help="where the synthetic HDF5 files go (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=ROOT / "results" / "scaling.json")
    p.add_argument("--md", type=Path, help="also write the markdown table here")
    p.add_argument("--plot", type=Path, help="write the log-log plot here (PNG)")
    p.add_argument("--report", type=Path, help="re-render the table and plot from this JSON, measuring nothing")
    # one point, in a subprocess
    p.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--kind", "--set", "--source", "--data", "--result"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.point:
        args.rows = int(args.rows[0])
        run_point(args)
        return 0
    if args.report:
        saved = json.loads(args.report.read_text())
        return report(saved["points"], saved["meta"], args, write_json=False)
    grid = FULL if args.full else QUICK
    rows, names, ranks = args.rows or grid["rows"], args.sets or grid["sets"], args.ranks or grid["ranks"]
    t0 = time.perf_counter()
    meta = {"command": "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s)"
                       f" per process, Python {platform.python_version()}",
            "load_before": " ".join(f"{v:.1f}" for v in os.getloadavg())}  # fmt: skip
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        plan = [(name, n, 1, "h5") for name in names for n in rows]
        plan += [(names[0], max(rows), w, "h5") for w in ranks if w > 1]
        if args.compare_memory:
            plan += [(names[-1], n, 1, "memory") for n in rows]
        for name, n, w, source in plan:
            data = work / f"synthetic_{SETS[name]}d_{n}.h5"
            if not data.is_file():
                write_synthetic(data, n, SETS[name])
            for kind in args.kinds:
                point = measure(kind, name, n, w, source, data, args)
                points.append(point)
                print(f"# {kind:4s} {name:13s} rows={n:>9,} ranks={w} {source:6s} time={point['time_s']:8.2f} s "
                      f"peak={point['peak_rss_mib']:6.0f} MiB growth={point['rss_growth_mib']:6.0f} MiB",
                      file=sys.stderr, flush=True)  # fmt: skip
    meta["load_after"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    meta["total_s"] = time.perf_counter() - t0
    return report(points, meta, args, write_json=True)


def report(points: list[dict], meta: dict, args: argparse.Namespace, write_json: bool) -> int:
    """Print the markdown table; write the JSON, ``--md`` and ``--plot`` outputs."""
    slopes = exponents(points)
    table = markdown(points, slopes, meta)
    print(table)
    if write_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "points": points, "exponents": slopes}, indent=1))
        print(f"\nJSON: {args.json}", file=sys.stderr)
    if args.md:
        args.md.write_text(table + "\n")
        print(f"markdown: {args.md}", file=sys.stderr)
    if args.plot:
        plot(points, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
