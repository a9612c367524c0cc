"""One (dataset, seed) job of the UCI benchmark: the flows and their validation grids, the GEBMs, paired differences.

Rows (methods) of a job, all on the same train / validation / test split:

* ``realnvp``, ``maf``, ``nsf``: the configuration's own flows by maximum likelihood (no input noise, no
  weight decay): trial 0 of each flow's grid;
* ``realnvp-reg``, ``maf-reg``, ``nsf-reg``: the point of the same grid (``[select.flow]``: Gaussian input
  noise σ, weight decay, width) with the lowest validation NLL, found by :func:`uci_select.coordinate_search`;
* ``gebm-frozen``: a KALE energy on the chosen flow of kind ``[select] gebm_base`` (``"best"``: the flow
  with the lowest validation NLL among all families; or one family, ``"realnvp"`` by default), frozen;
  the energy's settings (``[select.energy]``) are chosen by the validation NLL of the GEBM;
* ``gebm-joint``: base and that energy trained on by KALE;
* ``gebm-realnvp``, ``gebm-maf``, ``gebm-nsf``: a KALE energy (gebm-frozen's chosen settings, no grid) on
  each family's chosen flow, frozen; where that flow is gebm-frozen's base, it is gebm-frozen itself
  (``same_as``, no cost).

Every flow row records ``sample_time_1e4``: the CPU seconds to draw 10⁴ base samples (KALE draws
``noise_factor`` × batch of them per energy step; an autoregressive G takes D passes per layer).

``best-flow`` (in the paired differences) is the ``*-reg`` flow with the lowest validation NLL. Test
figures never enter a choice. Every row records its wall and CPU time (the process's CPU seconds:
with one torch thread, what the job costs a quiet core).
"""

from __future__ import annotations

import sys
import time
import traceback
import zlib

import numpy as np
import torch
from uci_methods import evaluate, flow_nll, run_flow_point, run_kale, sampling_cost, with_point
from uci_select import axes_from_config, coordinate_search, pick

import gebm_ppl as gp
from gebm_ppl.evaluation import paired_difference, stderr

__all__ = ["ENERGY_AXES", "FAMILY_GEBMS", "FLOW_AXES", "FLOW_KINDS", "GEBMS", "METHODS", "REFERENCES",
           "check_select", "choose_base", "job_entry", "run_job", "worker_init"]

FLOW_KINDS = ("realnvp", "maf", "nsf")
FAMILY_GEBMS = {f"gebm-{k}": k for k in FLOW_KINDS}
"""A frozen GEBM on each family's chosen flow: method → flow kind."""
METHODS = ("realnvp", "realnvp-reg", "maf", "maf-reg", "nsf", "nsf-reg", "gebm-frozen", "gebm-joint", *FAMILY_GEBMS)
GEBMS = ("gebm-frozen", "gebm-joint", *FAMILY_GEBMS)
REFERENCES = ("realnvp", "maf", "nsf", "realnvp-reg", "maf-reg", "nsf-reg", "best-flow")
FLOW_AXES = ("noise_std", "weight_decay", "hidden_features", "latent_df")
# [select.energy] axis -> the configuration key it sets
ENERGY_AXES = {"hidden": "energy.hidden", "penalty": "kale.penalty", "energy_l2": "kale.energy_l2",
               "noise_factor": "kale.noise_factor", "energy_lr": "kale.energy_lr"}  # fmt: skip


class MethodFailed(Exception):
    """A method could not produce a finite result (its message goes into the table and JSON)."""


def _seed_job(dataset: str, seed: int) -> None:
    """Reset the global RNGs at the start of a job, so that results do not depend on which worker ran what."""
    s = zlib.crc32(f"{dataset}/{seed}/job".encode()) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)


def _say(opts: dict, text: str) -> None:
    if not opts.get("quiet"):
        print(text, file=sys.stderr, flush=True)


def _load_data(dataset: str, seed: int, opts: dict):
    kwargs = {"data_dir": opts.get("data_dir"), "seed": seed}
    if opts.get("protocol"):
        kwargs["protocol"] = opts["protocol"]
    return gp.data.load(dataset, **kwargs)


def _log_abs_det(data) -> float | None:
    try:
        return gp.units.log_abs_det(data)
    except (TypeError, ValueError, KeyError):
        return None


def _history(h) -> dict:
    return {"epochs": len(h.records), "best_epoch": h.best_epoch, "best_value": h.best_value,
            "stop_reason": h.stop_reason, "steps": h.total_steps, "train_time": h.train_time}  # fmt: skip


def _check_start(cfg: dict, axes: list[tuple[str, list]], kind: str | None = None) -> None:
    """The first value of every axis must be the configuration's own (so trial 0 is the plain method)."""
    for key, values in axes:
        point = with_point({}, {key: values[0]}, kind)
        section, name = next((s, n) for s, t in point.items() for n in t)
        default = {"noise_std": 0.0, "weight_decay": 0.0, "penalty": 0.1, "energy_l2": 0.0}.get(name)
        own = cfg.get(section, {}).get(name, default)
        if own != with_point(cfg, {key: values[0]}, kind)[section][name]:
            raise ValueError(f"[select] axis {key!r} should start at the configuration's own value "
                             f"[{section}] {name} = {own!r}; it starts at {values[0]!r}.")


def check_select(cfg: dict) -> None:
    """Check the ``[select]`` table of a configuration before anything is trained.

    Raises:
        ValueError: an unknown axis or GEBM base, or an axis that does not start at the configuration's value.
    """
    select = cfg.get("select", {})
    if select.get("gebm_base", "realnvp") not in (*FLOW_KINDS, "best"):
        raise ValueError(f"[select] gebm_base should be one of {[*FLOW_KINDS, 'best']}. Got {select['gebm_base']!r}.")
    unknown = sorted(set(select) - {"gebm_base", "flows", "flow", "energy"})
    if unknown:
        raise ValueError(f"unknown keys {unknown} in [select]; expected gebm_base, flows, flow, energy.")
    flows = select.get("flows", list(FLOW_KINDS))
    if not isinstance(flows, list) or not flows or set(flows) - set(FLOW_KINDS):
        raise ValueError(f"[select] flows should be a non-empty list of {list(FLOW_KINDS)}. Got {flows!r}.")
    flow_axes = axes_from_config(select.get("flow"), FLOW_AXES)
    for kind in FLOW_KINDS:
        if kind in cfg or kind == "realnvp":
            _check_start(cfg, flow_axes, kind)
    _check_start(cfg, [(ENERGY_AXES[k], v) for k, v in axes_from_config(select.get("energy"), tuple(ENERGY_AXES))])


def run_job(dataset: str, seed: int, cfg: dict, methods: list[str], opts: dict) -> list[dict]:
    """All requested methods on one (dataset, seed); failures are recorded in their rows, never raised.

    ``opts``: ``device``, ``data_dir``, ``protocol`` (passed to :func:`gebm_ppl.data.load` when set),
    ``quiet``, ``verbose``.
    """
    _seed_job(dataset, seed)
    device = torch.device(opts.get("device", "cpu"))
    job_cpu, job_wall = time.process_time(), time.perf_counter()
    try:
        data = _load_data(dataset, seed, opts)
    except (OSError, ValueError, TypeError) as e:  # no data: every method of this job fails with the reason
        message = f"data: {type(e).__name__}: {str(e).splitlines()[0]}"[:300]
        _say(opts, f"{dataset}: {message}")
        return [{"dataset": dataset, "seed": seed, "method": m, "status": "failed", "message": message,
                 "wall_time": 0.0, "cpu_time": 0.0} for m in METHODS if m in methods]  # fmt: skip
    log_det = _log_abs_det(data)
    select = cfg.get("select", {})
    rows: dict[str, dict] = {}
    models: dict[str, object] = {}
    nll: dict[str, np.ndarray] = {}
    test = data.test

    def record(method: str, fn, cost: tuple[float, float] | None = None) -> None:
        """Run ``fn() -> (info, model, per-example test NLL)`` into the row of ``method``; ``cost`` = (wall, CPU)
        seconds when the work was done before (a grid)."""
        if cost is None:
            _say(opts, f"{dataset} seed {seed} {method}: started")
        rec = {"dataset": dataset, "seed": seed, "method": method, "status": "ok", "message": None}
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            info, model, per_example = fn()
            if not np.isfinite(per_example).all():
                raise MethodFailed(f"non-finite test NLL on {int((~np.isfinite(per_example)).sum())} test examples")
            rec.update(info)
            rec.update(test_nll=float(per_example.mean()), test_nll_se=stderr(per_example),
                       test_nll_median=float(np.median(per_example)), test_nll_max=float(per_example.max()))
            models[method], nll[method] = model, per_example
        except Exception as e:  # a failing method is recorded, never crashes the run
            rec.update(status="failed", message=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
            if opts.get("verbose"):
                traceback.print_exc()
        rec["wall_time"], rec["cpu_time"] = cost or (time.perf_counter() - t0, time.process_time() - c0)
        rows[method] = rec
        what = f"test NLL {rec['test_nll']:.3f}" if rec["status"] == "ok" else f"FAILED: {rec['message']}"
        _say(opts, f"{dataset} seed {seed} {method}: {what} ({rec['wall_time']:.0f} s)")

    # ---- flows: the validation grid of each flow; trial 0 is the configuration's own flow
    flow_axes = axes_from_config(select.get("flow"), FLOW_AXES)
    base_kind = select.get("gebm_base", "realnvp")
    want_gebm = any(m in methods for m in GEBMS)
    for kind in FLOW_KINDS:
        if kind not in select.get("flows", FLOW_KINDS):  # a family this configuration does not train
            continue
        for_base = (want_gebm and base_kind in (kind, "best")) or f"gebm-{kind}" in methods
        want_reg = f"{kind}-reg" in methods or for_base
        if not (want_reg or kind in methods):
            continue
        fitted: list = []

        def fit(point, kind=kind, fitted=fitted):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                info, model = run_flow_point(kind, data, cfg, seed, device, False, point)
                per_example = flow_nll(model, test, device)
                val, message = info["val_nll"], None
            except Exception as e:  # a failed grid point is recorded and never chosen
                info, model, per_example, val = {}, None, None, float("inf")
                message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            fitted.append((model, per_example, info, message))
            return {"val_nll": val, "test_nll": None if per_example is None else float(per_example.mean()),
                    "epochs": info.get("history", {}).get("epochs"), "message": message,
                    "wall_time": time.perf_counter() - t0, "cpu_time": time.process_time() - c0}  # fmt: skip

        _say(opts, f"{dataset} seed {seed} {kind}" + (" grid: started" if want_reg and flow_axes else ": started"))
        chosen, trials = coordinate_search(flow_axes if want_reg else [], fit)

        def result(i, with_trials, fitted=fitted, trials=trials):
            model, per_example, info, message = fitted[i]
            if model is None:
                raise MethodFailed(message or "failed")
            out = {**info, "point": trials[i]["point"], "sample_time_1e4": sampling_cost(model)}
            if with_trials:
                out.update(chosen_trial=i, trials=trials, unregularised=i == 0)
            return out, model, per_example

        if kind in methods:  # its cost is trial 0's (also counted in the grid's)
            record(kind, lambda result=result: result(0, False), (trials[0]["wall_time"], trials[0]["cpu_time"]))
        if want_reg:  # the whole grid's cost
            record(f"{kind}-reg", lambda result=result, chosen=chosen: result(chosen, True),
                   (sum(t["wall_time"] for t in trials), sum(t["cpu_time"] for t in trials)))

    flows = [m for m in METHODS if m not in GEBMS and m in nll]
    best_flow = choose_base("best", rows, nll)

    # ---- GEBMs on the chosen base (by validation NLL only)
    base_method = choose_base(base_kind, rows, nll)
    energy_axes = [(ENERGY_AXES[k], v) for k, v in axes_from_config(select.get("energy"), tuple(ENERGY_AXES))]
    energy_cfg = cfg

    def frozen():
        nonlocal energy_cfg
        if base_method is None:
            raise MethodFailed(f"needs the {base_kind} base flow, which failed or was not run")
        fitted: list = []

        def fit(point):
            c = with_point(cfg, point)
            info, gebm = run_kale(data, models[base_method], c, seed, device, False, joint=False)
            fitted.append((gebm, info, c))
            return {"val_nll": info["val_nll"], "epochs": info["history"]["epochs"]}

        chosen, trials = coordinate_search(energy_axes, fit)
        gebm, info, energy_cfg = fitted[chosen]
        figures, per_example = evaluate(gebm, test, energy_cfg, seed)
        return {**info, **figures, "base_method": base_method, "point": trials[chosen]["point"],
                "chosen_trial": chosen, "trials": trials,
                "sample_time_1e4": rows[base_method].get("sample_time_1e4")}, gebm, per_example  # fmt: skip

    def joint():
        if "gebm-frozen" not in models:
            raise MethodFailed("needs gebm-frozen (its energy and base), which failed or was not run")
        start_energy = models["gebm-frozen"].energy
        info, gebm = run_kale(data, models[base_method], energy_cfg, seed, device, False, joint=True,
                              energy=start_energy)
        figures, per_example = evaluate(gebm, test, energy_cfg, seed)
        return {**info, **figures, "base_method": base_method}, gebm, per_example

    def family(kind: str):
        flow = choose_base(kind, rows, nll)
        if flow is None:
            raise MethodFailed(f"needs the {kind} flow, which failed or was not run")
        if "gebm-frozen" not in models:
            raise MethodFailed("needs gebm-frozen's energy settings, which failed or was not run")
        info, gebm = run_kale(data, models[flow], energy_cfg, seed, device, False, joint=False)
        figures, per_example = evaluate(gebm, test, energy_cfg, seed)
        return {**info, **figures, "base_method": flow, "sample_time_1e4": rows[flow].get("sample_time_1e4")}, \
            gebm, per_example

    if want_gebm:
        record("gebm-frozen", frozen)
    if "gebm-joint" in methods:
        record("gebm-joint", joint)
    for method, kind in FAMILY_GEBMS.items():
        if method not in methods:
            continue
        if "gebm-frozen" in models and choose_base(kind, rows, nll) == base_method:  # the same model: no refit
            rows[method] = {**rows["gebm-frozen"], "method": method, "same_as": "gebm-frozen", "wall_time": 0.0,
                            "cpu_time": 0.0}  # fmt: skip
            models[method], nll[method] = models["gebm-frozen"], nll["gebm-frozen"]
            _say(opts, f"{dataset} seed {seed} {method}: = gebm-frozen (the same base)")
            continue
        record(method, lambda kind=kind: family(kind))

    # ---- paired differences per test example, Δ = method − reference (same split)
    refs = {r: nll[r] for r in REFERENCES if r in nll}
    if best_flow is not None:
        refs["best-flow"] = nll[best_flow]
    for method, rec in rows.items():
        if rec["status"] != "ok":
            continue
        rec["paired"] = {}
        for ref, ref_nll in refs.items():
            if ref == method or (ref == "best-flow" and method == best_flow):
                continue
            mean, se = paired_difference(nll[method], ref_nll, rec.get("log_partition_stderr", 0.0))
            rec["paired"][ref] = {"mean": mean, "se": se}
    info = {"sizes": data.metadata["sizes"], "dim": data.dim, "protocol": data.metadata["protocol"]}
    job = {"cpu_time": time.process_time() - job_cpu, "wall_time": time.perf_counter() - job_wall}
    out = []
    bases = {base_method, *(choose_base(k, rows, nll) for m, k in FAMILY_GEBMS.items() if m in methods)}
    keep = set(methods) | ({"gebm-frozen", *bases} if want_gebm else set())
    for method in METHODS:
        if method in rows and method in keep:
            rec = rows[method]
            rec.update(per_example_test_nll=nll.get(method), data=info, log_abs_det=log_det, best_flow=best_flow,
                       job=job, flows_run=flows)  # fmt: skip
            out.append(rec)
    return out


def choose_base(kind: str, rows: dict[str, dict], nll: dict) -> str | None:
    """The GEBM base method for ``[select] gebm_base = kind``: ``"best"``: the ``*-reg`` flow of lowest
    validation NLL (:func:`uci_select.pick`: test figures are never read); a family: its ``-reg`` flow, else
    its plain flow. None when no such flow succeeded."""
    if kind == "best":
        reg = [f"{k}-reg" for k in FLOW_KINDS if f"{k}-reg" in nll]
        return reg[pick([rows[m] for m in reg])] if reg else None
    return next((m for m in (f"{kind}-reg", kind) if m in nll), None)


def worker_init(threads: int) -> None:
    """Set up a worker process: ``threads`` torch threads."""
    torch.set_num_threads(threads)


def job_entry(job: tuple) -> tuple[str, int, list[dict]]:
    """``run_job(*job)`` for a worker pool: ``(dataset, seed, rows)``."""
    dataset, seed, cfg, methods, opts = job
    return dataset, seed, run_job(dataset, seed, cfg, methods, opts)
