"""Reporting for the UCI benchmark: summaries over seeds, the markdown table, JSON, HDF5 and the PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gebm_ppl._io import atomic_open

__all__ = ["LABELS", "METHODS", "format_table", "summarise", "write_outputs"]

METHODS = ("realnvp", "gebm-frozen", "gebm-joint", "maf", "nsf")
LABELS = {
    "realnvp": "RealNVP (MLE)",
    "gebm-frozen": "GEBM: KALE energy, frozen base",
    "gebm-joint": "GEBM: KALE base + energy",
    "maf": "MAF (MLE)",
    "nsf": "NSF (MLE)",
}
GEBMS = ("gebm-frozen", "gebm-joint")
REFERENCES = ("realnvp", "maf", "nsf")


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _mean_se(values: list[float], per_example_se: float | None) -> tuple[float, float | None, str]:
    """Mean and standard error: over seeds when there are several, else the per-example one."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size >= 2:
        return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size)), "seeds"
    return float(arr.mean()), per_example_se, "test examples"


def summarise(rows: list[dict], datasets: list[str], methods: list[str]) -> list[dict]:
    """One summary per (dataset, method): NLL mean ± se, paired differences, GEBM figures, wall time, failures."""
    out = []
    for ds in datasets:
        for m in METHODS:
            if m not in methods:
                continue
            runs = [r for r in rows if r["dataset"] == ds and r["method"] == m]
            if not runs:
                continue
            ok = [r for r in runs if r["status"] == "ok"]
            s = {
                "dataset": ds,
                "method": m,
                "label": LABELS[m],
                "seeds": [r["seed"] for r in runs],
                "n_ok": len(ok),
                "n_failed": len(runs) - len(ok),
                "failures": [{"seed": r["seed"], "message": r["message"]} for r in runs if r["status"] != "ok"],
                "wall_time": float(np.mean([r["wall_time"] for r in runs])),
                "status": "ok" if ok else "failed",
                "warnings": [{"seed": r["seed"], "message": r["warning"]} for r in ok if r.get("warning")],
            }
            if ok:
                single = ok[0] if len(ok) == 1 else None
                s["test_nll"], s["test_nll_se"], s["se_over"] = _mean_se(
                    [r["test_nll"] for r in ok], single["test_nll_se"] if single else None
                )
                s["val_nll"] = float(np.mean([r["val_nll"] for r in ok if _finite(r.get("val_nll"))] or [np.nan]))
                s["test_nll_median"] = float(np.mean([r.get("test_nll_median", np.nan) for r in ok]))
                s["epochs"] = [r["history"]["epochs"] for r in ok]
                s["paired"] = {}
                for ref in REFERENCES:
                    pairs = [r["paired"][ref] for r in ok if ref in r.get("paired", {})]
                    if len(pairs) == len(ok):
                        mean, se, over = _mean_se([p["mean"] for p in pairs], pairs[0]["se"] if single else None)
                        s["paired"][ref] = {"mean": mean, "se": se, "se_over": over}
                if m in GEBMS:
                    for key in ("nll_bound", "base_nll", "log_partition", "c"):
                        s[key] = float(np.mean([r[key] for r in ok]))
                    s["log_partition_stderr"] = float(max(r["log_partition_stderr"] for r in ok))
                    s["ess"] = float(min(r["ess"] for r in ok))
                    s["num_samples"] = int(min(r["num_samples"] for r in ok))
            out.append(s)
    return out


def _fmt(x, se=None, digits=2) -> str:
    if not _finite(x):
        return "n/a"
    if se is None or not _finite(se):
        return f"{x:.{digits}f}"
    return f"{x:.{digits}f} ± {se:.{digits}f}"


def _cell(s: dict | None) -> str:
    if s is None:
        return "—"
    if s["status"] != "ok":
        msg = s["failures"][0]["message"] if s["failures"] else "failed"
        return f"failed ({msg[:60]})".replace("|", "/")
    text = _fmt(s["test_nll"], s["test_nll_se"])
    if s["n_failed"]:
        text += f" ({s['n_failed']}/{s['n_failed'] + s['n_ok']} seeds failed)"
    return text


def _epochs_note(run_info: dict) -> str:
    parts = []
    for ds, cfg in run_info["configs"].items():
        p = [f"RealNVP ≤{cfg['mle']['epochs']} (patience {cfg['mle'].get('patience')})"]
        if "kale" in cfg:
            p.append(f"KALE frozen {cfg['kale']['epochs']}")
        if "kale_joint" in cfg:
            p.append(f"KALE joint {cfg['kale_joint']['epochs']}")
        for f in ("maf", "nsf"):
            if f in cfg:
                p.append(f"{f.upper()} ≤{cfg[f]['epochs']}")
        parts.append(f"{ds}: " + ", ".join(p))
    return "; ".join(parts)


def _protocols(run_info: dict) -> str:
    names = {info[0]["protocol"] for info in run_info.get("data", {}).values() if info}
    text = {"kexpfam": "kexpfam splits (shuffled, dequantised, whitened with training statistics)",
            "maf": "MAF's published splits and preprocessing"}  # fmt: skip
    return "; ".join(text.get(n, n) for n in sorted(names)) or "n/a"


def _machine_note(run_info: dict) -> str:
    """", 2 CPUs, load average 1.2 → 3.4" (the machine and its load, on which the wall time depends)."""
    m = run_info.get("machine") or {}
    parts = [f"{m['cpus']} CPUs"] if m.get("cpus") else []
    if _finite(m.get("load_average_start")):
        end = f" → {m['load_average_end']:.1f}" if _finite(m.get("load_average_end")) else ""
        parts.append(f"1-min load average {m['load_average_start']:.1f}{end}")
    return "".join(f", {p}" for p in parts)


def format_table(summary: list[dict], run_info: dict) -> str:
    """The markdown report: NLL table, GEBM details (paired differences), training times."""
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    datasets = [d for d in run_info["datasets"] if any(s["dataset"] == d for s in summary)]
    by = {(s["dataset"], s["method"]): s for s in summary}
    seeds = run_info["seeds"]
    over = "seeds" if len(seeds) >= 2 else "test examples"
    lines = [
        "## UCI density estimation: test NLL (nats per example, lower is better)",
        "",
        f"Seeds {seeds} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}); ± is the standard error over {over}. "
        f"Protocol: {_protocols(run_info)}. Total wall time "
        f"{run_info['wall_time'] / 60:.1f} min on {run_info['device']} ({run_info['threads']} torch threads"
        f"{_machine_note(run_info)}).",
        f"Training lengths (epochs): {_epochs_note(run_info)}.",
        "GEBM NLL: importance sampling with Â from "
        f"{min((s['num_samples'] for s in summary if s['method'] in GEBMS and 'num_samples' in s), default=0):,} "
        "base samples, with the KALE upper bound NLL_base − F(E, c) beside it.",
        "",
    ]
    head = ["dataset", "D", "n test", *(LABELS[m] for m in methods)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in datasets:
        first = next(s for s in summary if s["dataset"] == ds)
        info = next((r for r in run_info.get("data", {}).get(ds, [])), None)
        dim = info["dim"] if info else first.get("dim", "")
        n_test = info["sizes"]["test"] if info else ""
        lines.append("| " + " | ".join([ds, str(dim), str(n_test), *(_cell(by.get((ds, m))) for m in methods)]) + " |")

    gebm_rows = [s for s in summary if s["method"] in GEBMS]
    if gebm_rows:
        lines += [
            "",
            "### GEBMs against the flows (paired per test example: Δ NLL = GEBM − flow; Δ < 0: the GEBM is better)",
            "",
            "| dataset | GEBM | IS NLL | KALE bound | Δ vs RealNVP | Δ/se | Δ vs MAF | Δ vs NSF | Â ± se | ESS | "
            "goal: Δ < −2 se |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in gebm_rows:
            if s["status"] != "ok":
                lines.append(f"| {s['dataset']} | {s['method']} | {_cell(s)} | | | | | | | | no |")
                continue
            p = s["paired"]
            rv = p.get("realnvp")
            ratio = rv["mean"] / rv["se"] if rv and _finite(rv["se"]) and rv["se"] > 0 else float("nan")
            goal = "yes" if rv and _finite(ratio) and ratio < -2 else "no"
            cells = [
                s["dataset"], s["method"], _fmt(s["test_nll"], s["test_nll_se"]), _fmt(s["nll_bound"]),
                _fmt(rv["mean"], rv["se"]) if rv else "—", _fmt(ratio, digits=1),
                _fmt(p["maf"]["mean"], p["maf"]["se"]) if "maf" in p else "—",
                _fmt(p["nsf"]["mean"], p["nsf"]["se"]) if "nsf" in p else "—",
                _fmt(s["log_partition"], s["log_partition_stderr"], 3), f"{s['ess']:,.0f}", goal,
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        "### Per method (test NLL median: robust to the outliers that dominate some means)",
        "",
        "| dataset | method | val NLL | test NLL median | epochs run | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        epochs = ", ".join(str(e) for e in s.get("epochs", [])) or "—"
        cells = [s["dataset"], s["method"], _fmt(s.get("val_nll")), _fmt(s.get("test_nll_median")), epochs,
                 f"{s['wall_time']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    warnings = [(s, w) for s in summary for w in s.get("warnings", [])]
    if warnings:
        lines += ["", "### Warnings", ""]
        lines += [f"- {s['dataset']} / {s['method']} / seed {w['seed']}: {w['message']}" for s, w in warnings]
    failures = [(s, f) for s in summary for f in s["failures"]]
    if failures:
        lines += ["", "### Failures", ""]
        for s, f in failures:
            lines.append(f"- {s['dataset']} / {s['method']} / seed {f['seed']}: {f['message']}")
    if run_info.get("skipped_datasets"):
        lines += ["", "Skipped (files not present): " + ", ".join(d["dataset"] for d in run_info["skipped_datasets"])]
    if any(s["method"] == "gebm-joint" for s in summary):
        lines += ["", "gebm-joint's wall time is its own KALE stage; it starts from the MLE base and, with "
                  "kale_joint.init_energy = \"frozen\", from the gebm-frozen energy."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _clean(obj):
    """JSON-ready copy: numpy scalars to Python, non-finite floats to None, arrays dropped."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: Path, payload: dict) -> None:
    with atomic_open(path, "w") as f:
        json.dump(_clean(payload), f, indent=1, allow_nan=False)


def _write_h5(path: Path, rows: list[dict], summary: list[dict], run_info: dict) -> None:
    import h5py

    with atomic_open(path, "w+b") as f, h5py.File(f, "w") as h5:
        h5.attrs["format"] = "gebm_ppl.benchmarks.uci_density"
        h5.attrs["run"] = json.dumps(_clean(run_info))
        h5.attrs["summary"] = json.dumps(_clean(summary))
        for r in rows:
            g = h5.require_group(f"{r['dataset']}/seed{r['seed']}/{r['method']}")
            g.attrs["status"] = r["status"]
            g.attrs["message"] = r["message"] or ""
            g.attrs["result"] = json.dumps(_clean(r))
            for key in ("test_nll", "test_nll_se", "wall_time", "val_nll", "log_partition", "log_partition_stderr",
                        "ess", "nll_bound", "c"):  # fmt: skip
                if _finite(r.get(key)):
                    g.attrs[key] = float(r[key])
            nll = r.get("per_example_test_nll")
            if nll is not None:
                g.create_dataset("test_nll_per_example", data=np.asarray(nll, dtype=np.float64))


def _write_plot(path: Path, summary: list[dict], run_info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in run_info["datasets"] if any(s["dataset"] == d for s in summary)]
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(3.2 * max(len(datasets), 1) + 1, 3.6), squeeze=False)
    colors = {"realnvp": "C0", "gebm-frozen": "C3", "gebm-joint": "C1", "maf": "C2", "nsf": "C4"}
    for ax, ds in zip(axes[0], datasets, strict=False):
        ok_values = []
        for i, m in enumerate(methods):
            s = next((x for x in summary if x["dataset"] == ds and x["method"] == m), None)
            if s is not None and s["status"] == "ok":
                se = s["test_nll_se"] if _finite(s["test_nll_se"]) else 0.0
                ax.errorbar(i, s["test_nll"], yerr=se, fmt="o", color=colors[m], capsize=4)
                ok_values.append(s["test_nll"])
        top = max(ok_values) if ok_values else 1.0
        for i, m in enumerate(methods):
            s = next((x for x in summary if x["dataset"] == ds and x["method"] == m), None)
            if s is not None and s["status"] != "ok":
                ax.plot(i, top, "x", color="k", ms=10)
                ax.annotate("failed", (i, top), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xticks(range(len(methods)), [LABELS[m].replace(": ", ":\n") for m in methods], rotation=60,
                      ha="right", fontsize=7)  # fmt: skip
        ax.set_title(ds)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test NLL (nats), ± s.e.")
    over = "seeds" if len(run_info["seeds"]) >= 2 else "test examples"
    fig.suptitle(f"UCI test NLL (lower is better); error bars: s.e. over {over}", fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], summary: list[dict], run_info: dict, plot: bool = True) -> str:
    """Write ``uci_density.json``, ``.h5`` and ``.png`` under ``out`` (atomically); return the markdown table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_info = dict(run_info)
    run_info["data"] = {}
    for r in rows:
        if "data" in r:
            run_info["data"].setdefault(r["dataset"], [r["data"]])
    table = format_table(summary, run_info)
    run_info["outputs"] = {"json": str(out / "uci_density.json"), "h5": str(out / "uci_density.h5")}
    if plot:
        run_info["outputs"]["png"] = str(out / "uci_density.png")
    _write_json(out / "uci_density.json", {"run": run_info, "summary": summary, "results": rows, "table": table})
    _write_h5(out / "uci_density.h5", rows, summary, run_info)
    if plot:
        _write_plot(out / "uci_density.png", summary, run_info)
    return table
