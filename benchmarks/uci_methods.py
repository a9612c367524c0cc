"""The methods of the UCI benchmark, built on :mod:`gebm_ppl.runs` (the pipeline of ``gebm fit``).

* ``realnvp``: the base of the configuration (:func:`gebm_ppl.runs.build_base`) fitted by
  :func:`gebm_ppl.runs.train_base_mle`;
* ``gebm-frozen`` / ``gebm-joint``: an energy (:func:`gebm_ppl.runs.build_energy`) trained by
  :func:`gebm_ppl.runs.train_energy_kale` on a copy of that base, frozen or trained with it;
* ``maf``, ``nsf``: the flows of the ``[maf]`` / ``[nsf]`` tables, built by the same
  :func:`gebm_ppl.runs.build_base` (any registered base: ``class = "MAF"`` / ``"NSF"`` for the zuko flows;
  without ``class``, the nflows flows of :mod:`reference_flows`) and fitted by the same MLE stage.

GEBMs are evaluated by :func:`gebm_ppl.evaluate_gebm` (its field names are the result keys).
"""

from __future__ import annotations

import copy
import inspect
import time
import zlib

import numpy as np
import torch
from reference_flows import DEFAULT_CLASS
from uci_config import run_config
from uci_pool import PooledBase

import gebm_ppl as gp
from gebm_ppl import runs
from gebm_ppl.evaluation import evaluate_gebm, low_ess_warning

__all__ = ["FLOW_SECTIONS", "MLE_KEYS", "evaluate", "flow_nll", "flow_tables", "run_flow", "run_flow_point",
           "run_kale", "run_realnvp", "sampling_cost", "with_point"]

# where each flow's architecture and MLE options live in a benchmark configuration
FLOW_SECTIONS = {"realnvp": ("realnvp", "mle"), "maf": ("maf", "maf"), "nsf": ("nsf", "nsf")}
ARCH_AXES = frozenset({"hidden_features", "latent_df"})
"""Flow grid axes that build the base (its architecture table); the other axes are fit_mle options."""
MLE_KEYS = frozenset(n for n, p in inspect.signature(gp.fit_mle).parameters.items() if p.kind is p.KEYWORD_ONLY)
"""The keys of a ``[maf]`` / ``[nsf]`` table that go to :func:`gebm_ppl.fit_mle`; the others build the base."""


def seed_for(dataset: str, seed: int, method: str) -> int:
    """A stable torch seed per (dataset, seed, method) for weight initialisation."""
    return zlib.crc32(f"{dataset}/{seed}/{method}".encode()) % (2**31)


@torch.no_grad()
def flow_nll(model, x: np.ndarray, device: torch.device, batch_size: int = 8192) -> np.ndarray:
    """Per-example −log p(x) in float64, ``[n]``."""
    model.eval()
    t = torch.as_tensor(x, dtype=torch.float32, device=device)
    out = torch.cat([model.log_prob(chunk).double().cpu() for chunk in t.split(batch_size)])
    return -out.numpy()


def _n_params(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _history(h) -> dict:
    return {
        "epochs": len(h.records),
        "best_epoch": h.best_epoch,
        "best_value": h.best_value,
        "stop_reason": h.stop_reason,
        "steps": h.total_steps,
        "train_time": h.train_time,
        "eval_time": h.eval_time,
        "steps_per_second": h.steps_per_second,
    }


def run_realnvp(data, cfg: dict, seed: int, device, progress) -> tuple[dict, object]:
    """The MLE base of the configuration, initialised as ``gebm fit --seed SEED`` does (runs.init_seed)."""
    base = runs.build_base(run_config(cfg), data.dim, seed=runs.init_seed(seed, "base")).to(device)
    h = runs.train_base_mle(base, data, cfg["mle"], seed=seed, device=device, progress=progress)
    return {"history": _history(h), "val_nll": h.best_value, "n_params": _n_params(base)}, base


def flow_tables(kind: str, cfg: dict) -> tuple[dict, dict]:
    """(base table, fit_mle options) of flow ``kind`` (``maf`` or ``nsf``): the ``[kind]`` table split by
    :data:`MLE_KEYS`; the base table gets ``class`` = :data:`reference_flows.DEFAULT_CLASS` when it names none."""
    section = dict(cfg[kind])
    options = {k: section.pop(k) for k in list(section) if k in MLE_KEYS}
    return {"class": DEFAULT_CLASS[kind], **section}, options


def run_flow(kind: str, data, cfg: dict, seed: int, device, progress) -> tuple[dict, object]:
    """A reference flow (``maf`` or ``nsf``) built from its table by :func:`gebm_ppl.runs.build_base` (so every
    registered base and every base option works as in ``gebm fit``), fitted by the same MLE stage."""
    table, options = flow_tables(kind, cfg)
    flow = runs.build_base({"base": table}, data.dim, seed=seed_for(data.name, seed, kind)).to(device)
    h = runs.train_base_mle(flow, data, options, seed=seed, device=device, progress=progress)
    return {"history": _history(h), "val_nll": h.best_value, "n_params": _n_params(flow), "config": flow.config,
            "class": table["class"]}, flow  # fmt: skip


@torch.no_grad()
def sampling_cost(base, num_samples: int = 10_000, seed: int = 0) -> float:
    """CPU seconds to draw ``num_samples`` base samples G(z) (an autoregressive G takes D passes per layer)."""
    base.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(num_samples, base.latent_dim, generator=g).to(next(base.parameters()).device)
    base(z[:10])  # warm-up
    c0 = time.process_time()
    base(z)
    return time.process_time() - c0


def run_kale(data, base, cfg: dict, seed: int, device, progress, *, joint: bool, energy=None):
    """KALE on a copy of ``base``: frozen (``joint=False``) or trained with the energy.

    A frozen base with ``kale_base_pool = N > 0`` in the configuration trains on a pool of N base draws
    (:class:`uci_pool.PooledBase`, drawn once with a seed of (dataset, seed)); the returned GEBM holds the
    base itself, so its evaluation draws G afresh.
    """
    section = dict(cfg["kale_joint" if joint else "kale"])
    init_energy = section.pop("init_energy", "fresh")
    base = copy.deepcopy(base)
    for p in base.parameters():
        p.requires_grad_(joint)
    if energy is not None and init_energy == "frozen":
        energy, started_from = copy.deepcopy(energy), "gebm-frozen energy"
    else:
        energy = runs.build_energy(run_config(cfg), data.dim, seed=runs.init_seed(seed, "energy"))  # as gebm fit
        started_from = "fresh energy"
    pool = 0 if joint else int(cfg.get("kale_base_pool", 0))
    trained = PooledBase(base.to(device), pool, seed_for(data.name, seed, "pool")) if pool else base
    gebm = gp.GEBM(trained, energy).to(device)
    h = runs.train_energy_kale(gebm, data, {**section, "train_base": joint}, seed=seed, device=device,
                               progress=progress)
    gebm.base = base  # the base itself (not the pool) from here on
    info = {"history": _history(h), "val_nll": h.best_value, "n_params": _n_params(gebm.energy),
            "started_from": started_from}  # fmt: skip
    if pool:
        info.update(base_pool=pool, base_pool_time=trained.build_cpu_time)
    return info, gebm


def with_point(cfg: dict, point: dict, kind: str | None = None) -> dict:
    """A copy of ``cfg`` with a grid point applied: keys ``"section.key"`` as they are, and for a flow
    ``kind`` the flow keys ``hidden_features`` and ``latent_df`` (its architecture section), ``noise_std`` and
    ``weight_decay`` (its MLE options). A width w given to a flow whose ``hidden_features`` is a list of
    widths (zuko flows) sets every layer: [w] × its length."""
    cfg = copy.deepcopy(cfg)
    for key, value in point.items():
        if "." in key:
            section, name = key.split(".", 1)
        elif kind is not None:
            arch, options = FLOW_SECTIONS[kind]
            section, name = (arch if key in ARCH_AXES else options), key
        else:
            raise ValueError(f"grid key {key!r} should be 'section.key' outside a flow's grid.")
        current = cfg.get(section, {}).get(name)
        if name == "hidden_features" and isinstance(current, list) and isinstance(value, int):
            value = [value] * len(current)
        cfg.setdefault(section, {})[name] = value
    return cfg


def run_flow_point(kind: str, data, cfg: dict, seed: int, device, progress, point: dict) -> tuple[dict, object]:
    """Flow ``kind`` (``realnvp``, ``maf`` or ``nsf``) trained at a grid point (see :func:`with_point`); the
    same weight initialisation seed at every point, so the configuration's own point is the plain method."""
    cfg = with_point(cfg, point, kind)
    if kind == "realnvp":
        return run_realnvp(data, cfg, seed, device, progress)
    return run_flow(kind, data, cfg, seed, device, progress)


def evaluate(gebm, x: np.ndarray, cfg: dict, seed: int) -> tuple[dict, np.ndarray]:
    """:func:`gebm_ppl.evaluate_gebm` on the test points (Â from ``[eval] num_samples`` draws, seed
    runs.evaluation_seed(seed) = 10000 + seed, as ``gebm evaluate``): its figures (with a ``warning`` when the
    ESS is low) and the per-example NLLs."""
    ev = evaluate_gebm(gebm, x, num_samples=int(cfg["eval"]["num_samples"]),
                       batch_size=int(cfg["eval"]["batch_size"]), seed=runs.evaluation_seed(seed))
    figures = ev.to_dict()
    warning = low_ess_warning(ev)
    if warning:
        figures["warning"] = warning
    return figures, ev.nll_per_example
