"""Reporting for the UCI benchmark: summaries over seeds, the markdown tables, JSON, HDF5 and the PNG plot.

Length: the summary and the tables it feeds (NLLs in two units, the verdict against the best flow,
robust means, the validation choices, dominant points, costs) change together, so they stay in one file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from uci_job import GEBMS, METHODS, REFERENCES
from uci_stats import dominant_points, finite, lpt_makespan, mean_se, pooled_paired, trimmed_mean

from gebm_ppl._io import atomic_open

__all__ = ["LABELS", "METHODS", "format_table", "outliers", "summarise", "write_outputs"]

LABELS = {
    "realnvp": "RealNVP (MLE)",
    "realnvp-reg": "RealNVP (MLE, val-selected reg.)",
    "maf": "MAF (MLE)",
    "maf-reg": "MAF (MLE, val-selected reg.)",
    "nsf": "NSF (MLE)",
    "nsf-reg": "NSF (MLE, val-selected reg.)",
    "gebm-frozen": "GEBM: KALE energy on the chosen flow (frozen)",
    "gebm-joint": "GEBM: KALE base + energy",
    "gebm-realnvp": "GEBM on the chosen RealNVP (frozen)",
    "gebm-maf": "GEBM on the chosen MAF (frozen)",
    "gebm-nsf": "GEBM on the chosen NSF (frozen)",
    "best-flow": "best validation flow",
}
SHORT = {"noise_std": "σ", "weight_decay": "wd", "hidden_features": "width", "energy.hidden": "hidden",
         "kale.penalty": "λ", "kale.energy_l2": "ℓ2", "kale.noise_factor": "noise factor",
         "kale.energy_lr": "lr"}  # fmt: skip


def _label(point: dict) -> str:
    return ", ".join(f"{SHORT.get(k, k)}={v}" for k, v in point.items()) or "as configured"


def _mean_of(values) -> float | None:
    values = [float(v) for v in values if finite(v)]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict], datasets: list[str], methods: list[str]) -> list[dict]:
    """One summary per (dataset, method): NLL mean ± se over seeds in both units, pooled per-example figures
    (median, trimmed mean, paired differences against every reference), choices, costs, failures."""
    out = []
    for ds in datasets:
        ds_rows = [r for r in rows if r["dataset"] == ds]
        # per seed: the per-example NLLs of every reference (and of the best validation flow)
        refs: dict[int, dict[str, np.ndarray]] = {}
        for r in ds_rows:
            if r["status"] == "ok" and r.get("per_example_test_nll") is not None:
                refs.setdefault(r["seed"], {})[r["method"]] = np.asarray(r["per_example_test_nll"], np.float64)
        for seed, by in refs.items():
            best = next((r.get("best_flow") for r in ds_rows if r["seed"] == seed and r.get("best_flow")), None)
            if best in by:
                by["best-flow"] = by[best]
        for m in METHODS:
            runs = [r for r in ds_rows if r["method"] == m]
            if not runs:
                continue
            ok = [r for r in runs if r["status"] == "ok"]
            s = {
                "dataset": ds, "method": m, "label": LABELS[m], "seeds": [r["seed"] for r in runs],
                "n_ok": len(ok), "n_failed": len(runs) - len(ok),
                "failures": [{"seed": r["seed"], "message": r["message"]} for r in runs if r["status"] != "ok"],
                "wall_time": float(np.mean([r["wall_time"] for r in runs])),
                "cpu_time": float(np.mean([r.get("cpu_time", 0.0) for r in runs])),
                "sample_time_1e4": _mean_of(r.get("sample_time_1e4") for r in runs),
                "same_as": sorted({r["same_as"] for r in runs if r.get("same_as")}),
                "status": "ok" if ok else "failed",
                "warnings": [{"seed": r["seed"], "message": r["warning"]} for r in ok if r.get("warning")],
            }  # fmt: skip
            if ok:
                single = ok[0] if len(ok) == 1 else None
                s["test_nll"], s["test_nll_se"], s["se_over"] = mean_se(
                    [r["test_nll"] for r in ok], single["test_nll_se"] if single else None)
                dets = [r.get("log_abs_det") for r in ok]
                if all(finite(d) for d in dets):
                    s["log_abs_det"] = float(np.mean(dets))
                    s["test_nll_orig"], s["test_nll_orig_se"], _ = mean_se(
                        [r["test_nll"] - d for r, d in zip(ok, dets, strict=True)],
                        single["test_nll_se"] if single else None)
                vals = [r["val_nll"] for r in ok if finite(r.get("val_nll"))]
                s["val_nll"] = float(np.mean(vals)) if vals else None
                pooled = np.concatenate([np.asarray(r["per_example_test_nll"], np.float64) for r in ok])
                s.update(test_nll_median=float(np.median(pooled)), test_nll_trimmed=trimmed_mean(pooled, 0.1),
                         test_nll_max=float(pooled.max()), n_test_pooled=int(pooled.size))
                s["epochs"] = [r.get("history", {}).get("epochs") for r in ok]
                s["choices"] = [{"seed": r["seed"], "point": r.get("point"), "chosen_trial": r.get("chosen_trial"),
                                 "trials": len(r.get("trials") or []), "base_method": r.get("base_method"),
                                 "val_nll_first": (r.get("trials") or [{}])[0].get("val_nll"),
                                 "val_nll": r.get("val_nll")} for r in ok]  # fmt: skip
                s["best_flow"] = [r.get("best_flow") for r in ok]
                s["paired"] = {}
                for ref in (*REFERENCES, "base"):
                    deltas, shifts = [], []
                    for r in ok:
                        by = refs.get(r["seed"], {})
                        ref_name = r.get("base_method") if ref == "base" else ref
                        if ref_name not in by or ref_name == m or (ref == "best-flow" and r.get("best_flow") == m):
                            break
                        deltas.append(np.asarray(r["per_example_test_nll"], np.float64) - by[ref_name])
                        shifts.append(r.get("log_partition_stderr", 0.0))
                    else:
                        if deltas:
                            s["paired"][ref] = pooled_paired(deltas, shifts)
                if m in GEBMS:
                    for key in ("nll_bound", "base_nll", "log_partition", "c"):
                        s[key] = float(np.mean([r[key] for r in ok]))
                    s["log_partition_stderr"] = float(max(r["log_partition_stderr"] for r in ok))
                    s["ess"] = float(min(r["ess"] for r in ok))
                    s["num_samples"] = int(min(r["num_samples"] for r in ok))
            out.append(s)
    return out


def outliers(rows: list[dict], datasets: list[str], threshold: float = 0.05) -> dict[str, list[dict]]:
    """Per dataset, the test points that alone move some method's mean by > ``threshold`` nats."""
    out = {}
    for ds in datasets:
        per_seed: dict[int, dict[str, np.ndarray]] = {}
        for r in rows:
            if r["dataset"] == ds and r["status"] == "ok" and r.get("per_example_test_nll") is not None:
                per_seed.setdefault(r["seed"], {})[r["method"]] = np.asarray(r["per_example_test_nll"], np.float64)
        out[ds] = dominant_points(per_seed, threshold)
    return out


# ------------------------------------------------------------------------------------------ tables
def _fmt(x, se=None, digits=2) -> str:
    if not finite(x):
        return "n/a"
    if se is None or not finite(se):
        return f"{x:.{digits}f}"
    return f"{x:.{digits}f} ± {se:.{digits}f}"


def _cell(s: dict | None, key: str = "test_nll") -> str:
    if s is None:
        return "—"
    if s["status"] != "ok":
        msg = s["failures"][0]["message"] if s["failures"] else "failed"
        return f"failed ({msg[:50]})".replace("|", "/")
    text = _fmt(s.get(key), s.get(f"{key}_se"))
    if s["n_failed"]:
        text += f" ({s['n_failed']}/{s['n_failed'] + s['n_ok']} seeds failed)"
    return text


def _protocols(run_info: dict) -> str:
    names = {info[0]["protocol"] for info in run_info.get("data", {}).values() if info}
    text = {"kexpfam": "kexpfam splits (shuffled, dequantised, whitened with training statistics)",
            "maf": "MAF's published splits and preprocessing"}  # fmt: skip
    return "; ".join(text.get(n, n) for n in sorted(names)) or "n/a"


def _machine_note(run_info: dict) -> str:
    m = run_info.get("machine") or {}
    parts = [f"{m['cpus']} CPUs"] if m.get("cpus") else []
    if finite(m.get("load_average_start")):
        end = f" → {m['load_average_end']:.1f}" if finite(m.get("load_average_end")) else ""
        parts.append(f"1-min load average {m['load_average_start']:.1f}{end}")
    return "".join(f", {p}" for p in parts)


def _cost_note(run_info: dict) -> str:
    cpu = (run_info.get("cpu_time") or {}).get("jobs") or {}
    if not cpu:
        return ""
    workers = run_info.get("workers", 1)
    est = lpt_makespan(list(cpu.values()), 2)
    return (f" CPU time of the jobs: {sum(cpu.values()) / 60:.1f} min in all, {max(cpu.values()) / 60:.1f} min for "
            f"the longest; on a quiet 2-core machine with 2 workers that is ≈ {est / 60:.1f} min of wall time "
            f"(longest-job-first schedule of the measured CPU times). This run used {workers} worker(s).")


def _nll_table(summary, datasets, methods, key: str) -> list[str]:
    by = {(s["dataset"], s["method"]): s for s in summary}
    lines = ["| method | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for m in methods:
        lines.append(f"| {LABELS[m]} | " + " | ".join(_cell(by.get((d, m)), key) for d in datasets) + " |")
    return lines


def _choice_text(s: dict) -> str:
    parts = []
    for c in s.get("choices", []):
        if c["point"] is None:
            continue
        parts.append(f"seed {c['seed']}: {_label(c['point'])} ({c['trials']} tried)")
    return "; ".join(parts) or "—"


def format_table(summary: list[dict], run_info: dict, points: dict[str, list[dict]] | None = None) -> str:
    """The markdown report (see the module docstring)."""
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    datasets = [d for d in run_info["datasets"] if any(s["dataset"] == d for s in summary)]
    by = {(s["dataset"], s["method"]): s for s in summary}
    seeds = run_info["seeds"]
    over = "seeds" if len(seeds) >= 2 else "test examples"
    sizes = ", ".join(f"{d} D = {i[0]['dim']}, {i[0]['sizes']['test']} test rows"
                      for d, i in run_info.get("data", {}).items() if i)  # fmt: skip
    eval_n = min((s["num_samples"] for s in summary if s["method"] in GEBMS and "num_samples" in s), default=0)
    lines = [
        "## UCI density estimation: test NLL (nats per example, lower is better)",
        "",
        f"Seeds {seeds} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}); ± is the standard error over {over}. "
        f"Protocol: {_protocols(run_info)} ({sizes}). Total wall time {run_info['wall_time'] / 60:.1f} min on "
        f"{run_info['device']} ({run_info.get('workers', 1)} worker processes × {run_info['threads']} torch thread"
        f"{_machine_note(run_info)}).{_cost_note(run_info)}",
        "Every hyperparameter choice (the flows' regularisation, the energy's settings, the training length by "
        "early stopping) is made on the validation split of the same seed; test figures never enter a choice. "
        f"GEBM NLL: importance sampling with Â from {eval_n:,} base samples.",
        "",
        "### Whitened units (the coordinates the models are fitted in)",
        "",
        *_nll_table(summary, datasets, methods, "test_nll"),
        "",
        "### Original units (NLL_orig = NLL_white − log|det W|, W the whitening of that seed's training split)",
        "",
        "NLLs of the dequantised (jittered) values: a density in the data's own units, not the probability of "
        "the rounded measurements. Differences between methods are the same in both units.",
        "",
        *_nll_table(summary, datasets, methods, "test_nll_orig"),
        "",
        "log|det W| per dataset (mean over seeds): " + ", ".join(
            f"{d} {by[(d, m)]['log_abs_det']:.3f}" for d in datasets for m in methods[:1]
            if finite(by.get((d, m), {}).get("log_abs_det"))) + ".",
    ]  # fmt: skip

    # the verdict: each GEBM against the best validation flow of the same seed, paired and pooled
    lines += ["", "### GEBMs against the best validation-chosen flow (paired per test example, pooled over seeds)", "",
              "Δ NLL = GEBM − flow on the same test example (Δ < 0: the GEBM is better); se from all examples of all "
              "seeds (and se(Â)); the per-seed means' mean ± se over seeds beside it.", "",
              "| dataset | GEBM | best flow (per seed) | base | Δ vs best flow | Δ/se | median Δ | over seeds | "
              "Δ vs its base | beats the best flow by > 2 se |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for d in datasets:
        for m in GEBMS:
            s = by.get((d, m))
            if s is None:
                continue
            if s["status"] != "ok":
                lines.append(f"| {d} | {m} | | | {_cell(s)} | | | | | no |")
                continue
            best = ", ".join(f"{k} ×{n}" for k, n in Counter(s["best_flow"]).items())
            bases = ", ".join(sorted({c["base_method"] for c in s["choices"] if c.get("base_method")}))
            p, pb = s["paired"].get("best-flow"), s["paired"].get("base")
            ratio = p["mean"] / p["se"] if p and finite(p["se"]) and p["se"] > 0 else float("nan")
            verdict = "yes" if finite(ratio) and ratio < -2 else "no"
            cells = [d, m, best, bases, _fmt(p["mean"], p["se"]) if p else "—", _fmt(ratio, digits=1),
                     _fmt(p["median"]) if p else "—", _fmt(p["seed_mean"], p["seed_se"]) if p else "—",
                     _fmt(pb["mean"], pb["se"]) if pb else "—", verdict]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "### Paired differences against every flow (pooled over seeds; Δ = method − reference)", "",
              "| dataset | method | " + " | ".join(LABELS[r] for r in REFERENCES if r != "best-flow") + " |",
              "|---|---|" + "---|" * (len(REFERENCES) - 1)]  # fmt: skip
    for d in datasets:
        for m in methods:
            s = by.get((d, m))
            if s is None or s["status"] != "ok" or m in ("realnvp", "maf", "nsf"):
                continue
            cells = [_fmt(s["paired"][r]["mean"], s["paired"][r]["se"]) if r in s["paired"] else "—"
                     for r in REFERENCES if r != "best-flow"]  # fmt: skip
            lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")

    lines += ["", "### Robust figures (whitened units, per-example NLLs pooled over seeds)", "",
              "| dataset | method | mean | median | 10 % trimmed mean | max |", "|---|---|---|---|---|---|"]
    for s in summary:
        if s["status"] == "ok":
            lines.append(f"| {s['dataset']} | {s['method']} | {_fmt(s['test_nll'])} | {_fmt(s['test_nll_median'])} "
                         f"| {_fmt(s['test_nll_trimmed'])} | {_fmt(s['test_nll_max'], digits=1)} |")
    if points is not None:
        lines += ["", "### Test points that dominate the means", "",
                  "Points whose NLL under some method exceeds that method's median by more than 0.05 nats × the "
                  "number of test rows (each alone moves the mean by > 0.05 nats); index = row of that seed's test "
                  "split (0-based), NLL in whitened units.", ""]  # fmt: skip
        any_point = False
        for d in datasets:
            for p in points.get(d, []):
                any_point = True
                worst = sorted(p["nll"].items(), key=lambda kv: -kv[1])
                text = ", ".join(f"{m} {v:.1f}" for m, v in worst)
                lines.append(f"- {d}, seed {p['seed']}, test row {p['index']}: moves a mean by up to "
                             f"{p['max_shift']:.2f} nats; NLL {text}")
        if not any_point:
            lines.append("- none")

    lines += ["", "### Validation choices", "",
              "Flows: coordinate search over the grid of `[select.flow]` (the same for every flow, starting at the "
              "configured flow); energy: over `[select.energy]`. Val NLL: the first (configured) point → the "
              "chosen one, mean over seeds.", "",
              "| dataset | method | grid | val NLL | chosen point per seed |", "|---|---|---|---|---|"]  # fmt: skip
    for d in datasets:
        cfg = (run_info.get("configs") or {}).get(d, {})
        sel = cfg.get("select", {})
        for m in methods:
            s = by.get((d, m))
            if s is None or s["status"] != "ok" or not (m.endswith("-reg") or m == "gebm-frozen"):
                continue
            grid = sel.get("energy" if m == "gebm-frozen" else "flow", {})
            firsts = [c["val_nll_first"] for c in s["choices"] if finite(c.get("val_nll_first"))]
            val = f"{np.mean(firsts):.2f} → {s['val_nll']:.2f}" if firsts and finite(s.get("val_nll")) else "—"
            lines.append(f"| {d} | {m} | {_label(grid)} | {val} | {_choice_text(s)} |")

    lines += ["", "### GEBM details", "",
              "| dataset | GEBM | IS NLL | KALE bound | Â ± se | ESS (min) | epochs |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        if s["method"] in GEBMS and s["status"] == "ok":
            lines.append(f"| {s['dataset']} | {s['method']} | {_fmt(s['test_nll'])} | {_fmt(s['nll_bound'])} | "
                         f"{_fmt(s['log_partition'], s['log_partition_stderr'], 3)} | {s['ess']:,.0f} | "
                         f"{', '.join(str(e) for e in s['epochs'])} |")
    lines += ["", "### Cost per method (mean over seeds)", "",
              "A `-reg` flow's cost is its whole grid (the plain flow's fit included); gebm-frozen's includes its "
              "energy grid; a per-family GEBM whose flow is gebm-frozen's base is gebm-frozen itself (cost 0). "
              "Base sampling: CPU seconds for 10⁴ draws G(z) of the flow (a GEBM: of its base), one thread; KALE "
              "draws noise factor × batch of them per energy step, Â 10⁵.", "",
              "| dataset | method | wall (s) | CPU (s) | base sampling (CPU s / 10⁴) | epochs of the kept fit |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for s in summary:
        epochs = ", ".join(str(e) for e in s.get("epochs", [])) or "—"
        if s.get("same_as"):
            epochs += f" (= {', '.join(s['same_as'])} on some seeds)"
        lines.append(f"| {s['dataset']} | {s['method']} | {s['wall_time']:.0f} | {s['cpu_time']:.0f} | "
                     f"{_fmt(s.get('sample_time_1e4'), digits=3)} | {epochs} |")
    warnings = [(s, w) for s in summary for w in s.get("warnings", [])]
    if warnings:
        lines += ["", "### Warnings", ""]
        lines += [f"- {s['dataset']} / {s['method']} / seed {w['seed']}: {w['message']}" for s, w in warnings]
    failures = [(s, f) for s in summary for f in s["failures"]]
    if failures:
        lines += ["", "### Failures", ""]
        lines += [f"- {s['dataset']} / {s['method']} / seed {f['seed']}: {f['message']}" for s, f in failures]
    if run_info.get("skipped_datasets"):
        lines += ["", "Skipped (files not present): " + ", ".join(d["dataset"] for d in run_info["skipped_datasets"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ files
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
            for key in ("test_nll", "test_nll_se", "wall_time", "cpu_time", "val_nll", "log_partition",
                        "log_partition_stderr", "ess", "nll_bound", "c", "log_abs_det"):  # fmt: skip
                if finite(r.get(key)):
                    g.attrs[key] = float(r[key])
            nll = r.get("per_example_test_nll")
            if nll is not None:
                g.create_dataset("test_nll_per_example", data=np.asarray(nll, dtype=np.float64))


def _write_plot(path: Path, summary: list[dict], run_info: dict) -> None:
    """One panel per dataset, stacked: the methods on the y axis (labels read horizontally at page width),
    the test NLL on the x axis with ± s.e. bars and the pooled median as a tick; a failed method shows "failed".
    Saved with a tight bounding box so that no label is clipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    datasets = [d for d in run_info["datasets"] if any(s["dataset"] == d for s in summary)]
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)]
    n = max(len(datasets), 1)
    fig, axes = plt.subplots(n, 1, figsize=(7.0, 0.3 * len(methods) * n + 0.8 * n + 0.6), squeeze=False)
    rows = range(len(methods))
    for ax, ds in zip(axes[:, 0], datasets, strict=False):
        for i, m in enumerate(methods):
            s = next((x for x in summary if x["dataset"] == ds and x["method"] == m), None)
            if s is None:
                continue
            if s["status"] != "ok":
                ax.text(0.01, i, "failed", color="k", va="center", fontsize=8,
                        transform=blended_transform_factory(ax.transAxes, ax.transData))
                continue
            color = "C3" if m in GEBMS else ("C0" if m.endswith("-reg") else "C7")
            se = s["test_nll_se"] if finite(s["test_nll_se"]) else 0.0
            ax.errorbar(s["test_nll"], i, xerr=se, fmt="o", color=color, capsize=3, ms=5)
            ax.plot(s["test_nll_median"], i, "|", color=color, ms=10, mew=1.5)
        ax.set_yticks(list(rows), [LABELS[m] for m in methods], fontsize=8)
        ax.set_ylim(len(methods) - 0.5, -0.5)  # the first method on top
        ax.set_title(ds, fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[-1][0].set_xlabel("test NLL (nats per example, whitened; lower is better)", fontsize=9)
    over = "seeds" if len(run_info["seeds"]) >= 2 else "test examples"
    fig.suptitle(f"UCI test NLL: dot ± s.e. over {over}; bar: pooled median", fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
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
    points = outliers(rows, run_info["datasets"])
    table = format_table(summary, run_info, points)
    run_info["outputs"] = {"json": str(out / "uci_density.json"), "h5": str(out / "uci_density.h5")}
    if plot:
        run_info["outputs"]["png"] = str(out / "uci_density.png")
    _write_json(out / "uci_density.json", {"run": run_info, "summary": summary, "outliers": points, "results": rows,
                                           "table": table})  # fmt: skip
    _write_h5(out / "uci_density.h5", rows, summary, run_info)
    if plot:
        _write_plot(out / "uci_density.png", summary, run_info)
    return table


def read_rows(h5_path: str | Path) -> tuple[list[dict], dict]:
    """The rows (with their per-example test NLLs) and the run information of a ``uci_density.h5``."""
    import h5py

    rows = []
    with h5py.File(h5_path, "r") as h5:
        if h5.attrs.get("format") != "gebm_ppl.benchmarks.uci_density":
            raise ValueError(f"{str(h5_path)!r} is not a uci_density.h5 file.")
        run_info = json.loads(h5.attrs["run"])

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "result" in obj.attrs:
                r = json.loads(obj.attrs["result"])
                if "test_nll_per_example" in obj:
                    r["per_example_test_nll"] = obj["test_nll_per_example"][()]
                rows.append(r)

        h5.visititems(visit)
    order = {(d, s): i for i, (d, s) in enumerate((d, s) for d in run_info["datasets"] for s in run_info["seeds"])}
    rows.sort(key=lambda r: (order.get((r["dataset"], r["seed"]), 0), METHODS.index(r["method"])))
    return rows, run_info


def main(argv: list[str] | None = None) -> int:
    """Re-render the tables, JSON and plot of a finished run from its ``uci_density.h5`` (no training)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python benchmarks/uci_report.py", description=main.__doc__)
    p.add_argument("out", nargs="?", default="results", help="the run's output folder (default results/)")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows, run_info = read_rows(out / "uci_density.h5")
    run_info.pop("data", None)
    run_info.pop("outputs", None)
    summary = summarise(rows, run_info["datasets"], run_info["methods"])
    print(write_outputs(out, rows, summary, run_info, plot=True))
    for suffix in ("json", "h5", "png"):
        print(f"Wrote {out / f'uci_density.{suffix}'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
