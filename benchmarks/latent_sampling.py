"""Latent sampling benchmark: does MCMC in the latent space of a GEBM improve on its generator's samples?

A generator base G_θ: R^d → R^D (d ≪ D) and an energy E are trained together from scratch by KALE
(``gp.fit_adversarial(objective="kale")``); the same networks are also trained as a logistic GAN
(``objective="gan"``). Samples of the GEBM Q, dQ ∝ exp(−E) dG_θ, come from latent samplers targeting
ν(z) ∝ N(z; 0, I) exp(−E(G_θ(z))) (x = G_θ(z) with z ∼ ν is distributed as Q). Each method's images are
scored by the offline classifier features of :mod:`gebm_ppl.metrics` against the test split: Fréchet
distance (FD, lower is better; the floor FD(train, test) is what real images reach), KID (lower is
better), modes covered (of 10, higher is better), label KL to the label prior (nats, lower is better),
confident fraction (higher is better). Means ± standard errors over training seeds.

    python benchmarks/latent_sampling.py                 # digits, 3 seeds, a few minutes on 2 cores
    python benchmarks/latent_sampling.py --full          # MNIST (models/images/mnist.toml, conv nets: hours)
    python benchmarks/latent_sampling.py --data mnist-mlp --seeds 3 --threads 1   # MNIST, MLP nets
    python benchmarks/latent_sampling.py --seeds 1 --set adversarial.steps=500 --no-toy

Also the paper's toy: 3-D data on a deformed 2-sphere (:class:`gebm_ppl.data.toys.SphereToy`), a GEBM
(generator R² → R³ + energy) trained by ``fit_adversarial``; MMD to held-out data and the radius ‖x‖
distribution of generator and GEBM samples.

Results (JSON, HDF5, figures) go to ``--out`` (default ``results/latent_sampling/<data>``).

Length: one benchmark script (configuration, training, each sampler, scoring, the toy, tables and figures)
read top to bottom; its functions are imported by tests/test_latent_sampling.py.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

import gebm_ppl as gp
from gebm_ppl._io import atomic_open
from gebm_ppl.runs import build_base, build_energy, parse_override, set_dotted, write_json

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models" / "images"
METHODS = ("ula", "kinetic", "mala", "hmc", "imh", "dot")
DEFAULT_METHODS = ("ula", "kinetic", "mala", "imh", "dot")  # the paper's comparison (HMC: --methods)
VAL_METHODS = ("ula", "kinetic", "mala", "imh", "dot")  # those with a validation-chosen row
CHAIN_METHODS = ("ula", "kinetic", "mala", "imh")  # recorded along the chain: FD curve and label visits
METRICS = ("fd", "kid", "kid_stderr", "modes_covered", "label_kl", "confident_fraction")


# ----------------------------------------------------------------------------------------------- config


def load_config(name: str = "digits", overrides: tuple[str, ...] | list[str] = (), full: bool = False) -> dict:
    """The benchmark settings: ``models/images/<name>.toml`` (or a path), ``[full]`` merged when ``full``,
    then ``overrides`` (``"section.key=value"``, values in TOML syntax)."""
    path = Path(name)
    if not path.suffix:
        path = MODELS / f"{name}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found (expected a TOML file, e.g. models/images/digits.toml).")
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    extra = cfg.pop("full", {})
    if full:
        for k, v in _flatten(extra):
            set_dotted(cfg, k, v)
    for item in overrides:  # the library's one --set parser (gebm fit and the UCI benchmark use it too)
        _, k, v = parse_override(item)
        set_dotted(cfg, k, v)
    cfg.setdefault("data", {}).setdefault("name", path.stem)
    return cfg


def _flatten(table: dict, prefix: str = ""):
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


# ----------------------------------------------------------------------------------------------- models


def build_gebm(cfg: dict, data, seed: int = 0) -> gp.GEBM:
    """A fresh GEBM from the ``[base]`` and ``[energy]`` tables (dim and image_shape from ``data``)."""
    dim = int(np.prod(data.image_shape))
    torch.manual_seed(seed)  # one seed for both parts, base first (as this benchmark has always done)
    base = build_base(cfg, dim, tuple(data.image_shape))
    energy = build_energy(cfg, dim, tuple(data.image_shape))
    return gp.GEBM(base, energy)


def train(cfg: dict, data, objective: str = "kale", seed: int = 0) -> tuple[gp.GEBM, dict]:
    """Train generator and energy from scratch by ``fit_adversarial(objective=...)``; returns (gebm, info)."""
    gebm = build_gebm(cfg, data, seed)
    start = time.perf_counter()
    history = gp.fit_adversarial(gebm, data.train, data.val, objective=objective, seed=seed, progress=False,
                                 **cfg["adversarial"])
    last = history.last
    info = {"train_time": time.perf_counter() - start, "kale_val": float(last.get("kale_val", math.nan)),
            "log_partition": float(gebm.log_partition.detach()), "ess": float(last.get("ess", math.nan))}
    return gebm, info


def zero_energy(gebm: gp.GEBM) -> gp.GEBM:
    """The control: the same generator with E ≡ 0 (then ν = N(0, I) and Q = G_θ)."""
    return gp.GEBM(gebm.base, gp.QuadraticEnergy(gebm.dim))


# ----------------------------------------------------------------------------------------------- sampling


@torch.no_grad()
def generator_samples(gebm: gp.GEBM, n: int, seed: int) -> np.ndarray:
    """``[n, D]`` images G_θ(z), z ∼ N(0, I) with ``seed``."""
    from gebm_ppl._modes import eval_mode

    with eval_mode(gebm):
        return gebm.base.sample(n, generator=torch.Generator().manual_seed(seed)).numpy()


def run_sampler(gebm: gp.GEBM, method: str, cfg: dict, n: int, seed: int, *, settings: dict | None = None,
                steps: int | None = None) -> dict:
    """Draw ``n`` images of the GEBM with a latent sampler.

    ``settings`` replaces the config's ``[benchmark.samplers.<method>]`` keywords (with ``temperature`` T:
    the chains target ν_T(z) ∝ N(z; 0, I) exp(−T·E(G_θ(z))); T = 1 is the GEBM itself) and ``steps`` the
    config's ``mcmc_steps`` (then ``steps`` must be a multiple of mcmc_steps / curve_points, the
    recording interval, which stays the same).

    The chain samplers (ULA, kinetic, MALA, IMH) run n chains from z₀ ∼ N(0, I) for ``mcmc_steps``
    transitions and keep the last state of each chain as its image; ``curve_points`` intermediate
    states are recorded for the FD-against-steps curve and the labels each chain visits. HMC runs
    fewer, longer chains (their draws pooled); DOT maps n prior draws.

    Returns a dict with ``x`` ``[n, D]``, ``path`` ``[n, K, D]`` (chain samplers; None otherwise),
    ``steps`` (transitions at each recorded state), and the run's ``num_grad_evals``,
    ``num_energy_evals``, ``sampling_time``.
    """
    bench = cfg["benchmark"]
    kw = dict(bench.get("samplers", {}).get(method, {}) if settings is None else settings)
    backend = kw.pop("backend", "pyro")
    total = int(bench["mcmc_steps"])
    if method in CHAIN_METHODS:
        points = int(bench["curve_points"])
        thin = max(1, total // points)
        if steps is not None:
            if steps % thin or steps < thin:
                raise ValueError(f"'steps' should be a positive multiple of the recording interval {thin}. "
                                 f"Got {steps}.")
            points = steps // thin
        idata = gp.sample_latent(gebm, method, backend=backend, num_samples=points, warmup_steps=0, num_chains=n,
                                 seed=seed, thin=thin, **kw)
        path = np.asarray(idata.posterior["x"].values, dtype=np.float32)  # [n, K, D]
        out = {"x": path[:, -1], "path": path, "steps": [thin * (k + 1) for k in range(points)]}
    elif method in ("hmc", "nuts"):
        chains = int(kw.pop("num_chains", 50))
        warmup = int(kw.pop("warmup_steps", 100))
        draws = max(1, math.ceil(n / chains))
        idata = gp.sample_latent(gebm, method, backend=backend, num_samples=draws, warmup_steps=warmup,
                                 num_chains=chains, seed=seed, **kw)
        x = np.asarray(idata.posterior["x"].values, dtype=np.float32).reshape(-1, gebm.dim)[:n]
        out = {"x": x, "path": None, "steps": None}
    elif method == "dot":
        idata = gp.sample_latent(gebm, method, backend=backend, num_samples=1, warmup_steps=0, num_chains=n,
                                 seed=seed, **kw)
        out = {"x": np.asarray(idata.posterior["x"].values, dtype=np.float32).reshape(-1, gebm.dim),
               "path": None, "steps": None}
    else:
        raise ValueError(f"unknown method {method!r}: expected one of {METHODS}.")
    for key in ("num_grad_evals", "num_energy_evals", "sampling_time"):
        out[key] = float(idata.attrs[key])
    return out


# ----------------------------------------------------------------------------------------------- the paper's protocol


def val_fd(data, classifier, split: str = "val"):
    """``fd(x)``: the Fréchet distance of images ``x`` to the VALIDATION split (its features computed once).

    The sampler settings are chosen with this score only: it never reads ``data.test``. (``split="test"``:
    the same FD as :func:`score`'s, for the FD-against-steps curves.)
    """
    ref = classifier.features(np.asarray(getattr(data, split)))

    def fd(x: np.ndarray) -> float:
        return float(gp.metrics.frechet_distance(classifier.features(np.asarray(x, dtype=np.float32)), ref))

    return fd


def candidates(cfg: dict, method: str) -> list[dict]:
    """The validation grid of ``method``: ``[benchmark.validation].<method>``, a list of sampler settings (each
    with its ``temperature``), or the config's T = 1 settings alone."""
    grid = cfg["benchmark"].get("validation", {}).get(method)
    if not grid:
        return [{**cfg["benchmark"].get("samplers", {}).get(method, {}), "temperature": 1.0}]
    return [{"temperature": 1.0, **c} for c in grid]


def choose_on_validation(gebm: gp.GEBM, method: str, cfg: dict, data, classifier, seed: int, fd=None) -> dict:
    """Choose T, the step size, its decay and the number of steps of a latent sampler by FD to validation images.

    Each candidate of :func:`candidates` runs ``[benchmark.validation].chains`` chains for ``mcmc_steps``
    transitions; every recorded state (every mcmc_steps / curve_points transitions) is a candidate number of
    steps. The best (candidate, steps) by FD to ``data.val`` wins (test images are never read).

    Returns ``{"settings": dict, "steps": int | None, "fd_val": float, "grid": [(settings, steps, fd), ...]}``
    (``steps`` None for DOT, whose steps are a setting).
    """
    fd = val_fd(data, classifier) if fd is None else fd
    chains = int(cfg["benchmark"].get("validation", {}).get("chains", 500))
    grid = []
    for k, cand in enumerate(candidates(cfg, method)):
        out = run_sampler(gebm, method, cfg, chains, seed=50_000 + 100 * seed + k, settings=cand)
        if out["path"] is None:
            grid.append((cand, None, fd(out["x"])))
        else:
            grid += [(cand, steps, fd(out["path"][:, i])) for i, steps in enumerate(out["steps"])]
    finite = [g for g in grid if math.isfinite(g[2])]
    if not finite:
        raise RuntimeError(f"choose_on_validation: every {method} candidate gave a non-finite validation FD.")
    settings, steps, best = min(finite, key=lambda g: g[2])
    return {"settings": settings, "steps": steps, "fd_val": best, "grid": grid}


def tune_energy(gebm: gp.GEBM, cfg: dict, data, seed: int) -> tuple[gp.GEBM, float]:
    """The paper's "tune" stage: a copy of the GEBM whose energy is fine-tuned by KALE on its frozen generator
    (:func:`gebm_ppl.refine_energy` with ``[tune]``); returns (tuned GEBM, seconds)."""
    import copy

    tuned = copy.deepcopy(gebm)
    start = time.perf_counter()
    gp.refine_energy(tuned, data.train, data.val, seed=seed, progress=False, **cfg["tune"])
    return tuned, time.perf_counter() - start


def refine_generator(generator, cfg: dict, data, seed: int) -> tuple[gp.GEBM, float]:
    """A fresh energy (the ``[energy]`` network, seeded) trained by KALE on a frozen generator (e.g. a GAN's):
    :func:`gebm_ppl.refine_energy` with ``[refine]``; returns (GEBM, seconds)."""
    dim = int(np.prod(data.image_shape))
    torch.manual_seed(seed)
    energy = build_energy(cfg, dim, tuple(data.image_shape))
    start = time.perf_counter()
    gebm, _ = gp.refine_energy(generator, data.train, data.val, energy=energy, seed=seed, progress=False,
                               **cfg["refine"])
    return gebm, time.perf_counter() - start


def train_ebm(cfg: dict, data, seed: int):
    """The EBM baseline: the ``[energy]`` network (seeded) trained in data space by contrastive divergence
    (:func:`gebm_ppl.baselines.fit_ebm` with ``[ebm.train]``); returns (energy, seconds)."""
    from gebm_ppl.baselines import fit_ebm

    dim = int(np.prod(data.image_shape))
    torch.manual_seed(seed)
    energy = build_energy(cfg, dim, tuple(data.image_shape))
    start = time.perf_counter()
    fit_ebm(energy, data.train, data.val, seed=seed, **cfg["ebm"]["train"])
    return energy, time.perf_counter() - start


def run_ebm(energy, cfg: dict, n: int, seed: int, settings: dict, steps: int | None = None) -> dict:
    """``n`` EBM images by data-space Langevin (:func:`gebm_ppl.baselines.sample_ebm`) from uniform noise, at the
    training temperature; ``settings`` the step size (and decay), ``steps`` (default ``[ebm].steps``) a multiple
    of the recording interval ``[ebm].steps / curve_points``. The dict of :func:`run_sampler`."""
    from gebm_ppl.baselines import sample_ebm

    total = int(cfg["ebm"]["steps"])
    thin = max(1, total // int(cfg["benchmark"]["curve_points"]))
    steps = total if steps is None else int(steps)
    idata = sample_ebm(energy, n, steps=steps, num_recorded=steps // thin, seed=seed,
                       temperature=float(cfg["ebm"]["train"].get("temperature", 1.0)), **settings)
    path = np.asarray(idata.posterior["x"].values, dtype=np.float32)
    out = {"x": path[:, -1], "path": path, "steps": [thin * (k + 1) for k in range(path.shape[1])]}
    for key in ("num_grad_evals", "num_energy_evals", "sampling_time"):
        out[key] = float(idata.attrs[key])
    return out


def choose_ebm_on_validation(energy, cfg: dict, data, classifier, seed: int, fd=None) -> dict:
    """The EBM's Langevin step size (``[ebm].validation`` grid) and number of steps, by FD to validation images
    (as :func:`choose_on_validation`)."""
    fd = val_fd(data, classifier) if fd is None else fd
    chains = int(cfg["benchmark"].get("validation", {}).get("chains", 500))
    grid = []
    for k, cand in enumerate(cfg["ebm"]["validation"]):
        out = run_ebm(energy, cfg, chains, 60_000 + 100 * seed + k, cand)
        grid += [(cand, steps, fd(out["path"][:, i])) for i, steps in enumerate(out["steps"])]
    settings, steps, best = min((g for g in grid if math.isfinite(g[2])), key=lambda g: g[2])
    return {"settings": settings, "steps": steps, "fd_val": best, "grid": grid}


# ----------------------------------------------------------------------------------------------- scoring


def score(x: np.ndarray, data, classifier) -> dict:
    """The sample-quality metrics of ``x`` against the test split (:func:`gebm_ppl.metrics.sample_quality`)."""
    q = gp.metrics.sample_quality(x, data, classifier)
    return {k: float(q[k]) for k in METRICS}


def labels_visited(path: np.ndarray, classifier) -> float:
    """Mean over chains of the number of distinct predicted labels among a chain's recorded states."""
    n, k, dim = path.shape
    pred = np.asarray(classifier.predict_proba(path.reshape(n * k, dim))).argmax(-1).reshape(n, k)
    return float(np.mean([len(set(row.tolist())) for row in pred]))


def evaluate_seed(cfg: dict, data, classifier, seed: int, methods=DEFAULT_METHODS, log=print) -> dict:
    """Train the GEBM, the GAN and the EBM with one seed and score every method against the test split.

    Rows (each with the metrics of :func:`score`, ``grad_evals_per_image``, ``energy_evals_per_image``,
    ``time`` in seconds and, for chain samplers, ``labels_visited``):

    * ``generator``: G_θ(z), z ∼ N(0, I), with ``fd_draw_spread`` (|FD₁ − FD₂| of two independent draws);
    * ``gebm-ula-untuned``: latent ULA at T = 1 on the end-to-end GEBM (before the tune stage);
    * ``gebm-<method>``: the GEBM after the tune stage (:func:`tune_energy`; the end-to-end one without a
      ``[tune]`` table), sampled at T = 1 with the config's settings: the model itself;
    * ``gebm-<method>-val``: the same GEBM at the setting chosen on validation images
      (:func:`choose_on_validation`: T, step size, decay, steps);
    * ``control-E0-ula``: E ≡ 0, latent ULA (reproduces the generator);
    * ``gan``: the same networks trained as a logistic GAN, its generator alone;
    * ``gan-refined-ula`` / ``gan-refined-ula-val``: a KALE energy trained on the GAN's frozen generator
      (:func:`refine_generator`), latent ULA at T = 1 / at the validation-chosen setting;
    * ``ebm``: the energy network trained in data space by contrastive divergence, data-space Langevin at the
      validation-chosen step size and steps.

    Returns ``{"rows", "curves": {name: (steps, fds)}, "grids": {name: images}, "train", "chosen"}``.
    """
    bench = cfg["benchmark"]
    n = int(bench["num_samples"])
    grid = int(bench.get("grid", 64))
    fd_val, fd_test = val_fd(data, classifier), val_fd(data, classifier, "test")
    rows, curves, grids, info, chosen = {}, {}, {}, {}, {}

    def record(name, out, gen_fd=None):
        extra = {"time": out["sampling_time"], "grad_evals_per_image": out["num_grad_evals"] / n,
                 "energy_evals_per_image": out["num_energy_evals"] / n}
        if out.get("path") is not None:
            extra["labels_visited"] = labels_visited(out["path"], classifier)
            fds = [fd_test(out["path"][:, k]) for k in range(out["path"].shape[1])]
            curves[name] = ([0, *out["steps"]], [gen_fd, *fds]) if gen_fd is not None else (out["steps"], fds)
        rows[name] = {**score(out["x"], data, classifier), **extra}
        grids[name] = out["x"][:grid]
        log(f"  seed {seed} {name:<22} FD {rows[name]['fd']:8.3f}  ({extra['time']:.1f} s)")

    def draw(model):
        t = time.perf_counter()
        x = generator_samples(model, n, 10_000 + seed)
        return {"x": x, "sampling_time": time.perf_counter() - t, "num_grad_evals": 0.0, "num_energy_evals": 0.0}

    def latent(model, name, method, setting=None, base="generator"):
        out = run_sampler(model, method, cfg, n, seed, settings=None if setting is None else setting["settings"],
                          steps=None if setting is None else setting["steps"])
        record(name, out, rows[base]["fd"])  # the curve starts (step 0) at the generator's own FD

    gebm, info["kale"] = train(cfg, data, "kale", seed)
    kale = info["kale"]
    log(f"  seed {seed} trained GEBM (KALE) in {kale['train_time']:.1f} s, val KALE {kale['kale_val']:.3f}")
    record("generator", draw(gebm))
    # the spread between independent generator draws: the noise level of an FD difference
    second = score(generator_samples(gebm, n, 20_000 + seed), data, classifier)["fd"]
    rows["generator"]["fd_draw_spread"] = abs(second - rows["generator"]["fd"])
    if "tune" in cfg:
        latent(gebm, "gebm-ula-untuned", "ula")
        gebm, info["tune_time"] = tune_energy(gebm, cfg, data, seed)
        log(f"  seed {seed} tuned the energy on the frozen generator in {info['tune_time']:.1f} s")
    for method in methods:
        latent(gebm, f"gebm-{method}", method)
        if method in VAL_METHODS:
            t = time.perf_counter()
            chosen[f"gebm-{method}-val"] = choose_on_validation(gebm, method, cfg, data, classifier, seed, fd_val)
            info[f"select_time_{method}"] = time.perf_counter() - t
            latent(gebm, f"gebm-{method}-val", method, chosen[f"gebm-{method}-val"])
    latent(zero_energy(gebm), "control-E0-ula", "ula")

    gan, info["gan"] = train(cfg, data, "gan", seed)
    log(f"  seed {seed} trained GAN in {info['gan']['train_time']:.1f} s")
    record("gan", draw(gan))
    if "refine" in cfg:
        refined, info["refine_time"] = refine_generator(gan.base, cfg, data, seed)
        log(f"  seed {seed} refined the GAN's generator with a KALE energy in {info['refine_time']:.1f} s")
        latent(refined, "gan-refined-ula", "ula", base="gan")
        chosen["gan-refined-ula-val"] = choose_on_validation(refined, "ula", cfg, data, classifier, seed, fd_val)
        latent(refined, "gan-refined-ula-val", "ula", chosen["gan-refined-ula-val"], base="gan")
    if "ebm" in cfg:
        energy, info["ebm_time"] = train_ebm(cfg, data, seed)
        log(f"  seed {seed} trained the EBM in {info['ebm_time']:.1f} s")
        chosen["ebm"] = choose_ebm_on_validation(energy, cfg, data, classifier, seed, fd_val)
        record("ebm", run_ebm(energy, cfg, n, seed, chosen["ebm"]["settings"], chosen["ebm"]["steps"]))
    for name, c in chosen.items():
        log(f"  seed {seed} {name}: chosen {c['settings']} steps {c['steps']} (val FD {c['fd_val']:.2f})")
    return {"rows": rows, "curves": curves, "grids": grids, "train": info, "chosen": chosen}


def summarise(per_seed: list[dict]) -> dict:
    """Mean and standard error over seeds of every numeric entry of every row: ``{name: {key: (mean, se)}}``."""
    out: dict = {}
    for name in per_seed[0]["rows"]:
        out[name] = {}
        for key in per_seed[0]["rows"][name]:
            v = np.array([s["rows"][name][key] for s in per_seed], dtype=float)
            se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
            out[name][key] = (float(v.mean()), se)
    return out


def paired(per_seed: list[dict], a: str, b: str, key: str = "fd") -> list[float]:
    """Per-seed differences ``key(a) − key(b)`` (FD: negative means ``a`` is better)."""
    return [s["rows"][a][key] - s["rows"][b][key] for s in per_seed]


def claims(per_seed: list[dict]) -> list[dict]:
    """The GEBM paper's image claims as paired FD differences over seeds (a − b; negative: a is better).

    Each entry: ``claim``, ``a``, ``b``, ``diffs`` (per seed), ``mean``, ``se``, ``holds`` (every seed's difference
    is negative, and for the claim against the generator more negative than −3× that seed's draw spread).
    Rows missing from the run are skipped.
    """
    rows = per_seed[0]["rows"]
    spread = [s["rows"]["generator"]["fd_draw_spread"] for s in per_seed]
    wanted = []
    for tag in ("", "-val"):
        setting = "T = 1" if not tag else "validation-chosen"
        wanted += [(f"latent ULA beats the generator by > 3x the draw spread ({setting})", f"gebm-ula{tag}",
                    "generator", 3.0)]
        wanted += [(f"latent ULA beats {m.upper()} ({setting})", f"gebm-ula{tag}", f"gebm-{m}{tag}", 0.0)
                   for m in ("imh", "dot")]
        wanted += [(f"the GEBM (latent ULA, {setting}) beats the GAN", f"gebm-ula{tag}", "gan", 0.0),
                   (f"the GEBM (latent ULA, {setting}) beats the EBM", f"gebm-ula{tag}", "ebm", 0.0),
                   (f"a KALE energy refines the GAN's generator (latent ULA, {setting})", f"gan-refined-ula{tag}",
                    "gan", 0.0)]
    out = []
    for claim, a, b, margin in wanted:
        if a not in rows or b not in rows:
            continue
        d = paired(per_seed, a, b)
        se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
        holds = all(di < -margin * sp if margin else di < 0 for di, sp in zip(d, spread, strict=True))
        out.append({"claim": claim, "a": a, "b": b, "diffs": d, "mean": float(np.mean(d)), "se": se, "holds": holds})
    return out


def claims_table(entries: list[dict], spread: list[float]) -> str:
    """The claims as a Markdown table."""
    lines = ["| claim | a − b (FD, per seed) | mean ± se | holds on every seed |", "|---|---|---|---|"]
    for e in entries:
        per = ", ".join(f"{d:+.2f}" for d in e["diffs"])
        lines.append(f"| {e['claim']}: {e['a']} − {e['b']} | {per} | {_fmt(e['mean'], e['se'])} | "
                     f"{'yes' if e['holds'] else 'no'} |")
    lines.append("")
    lines.append("Generator draw spread per seed: " + ", ".join(f"{s:.2f}" for s in spread) + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- toy


def run_toy(cfg: dict, seed: int = 0) -> dict:
    """Fit a GEBM (MLP generator R² → R³, MLP energy) to the deformed-sphere toy by KALE.

    Returns the MMD² to held-out data (unbiased, RBF with the median bandwidth) of the generator's and
    the GEBM's (latent ULA) samples and of a second exact sample (the noise level), and the radius
    ‖x‖ quantiles (5, 25, 50, 75, 95 %) of each.
    """
    toy_cfg = cfg["toy"]
    toy = gp.toys.SphereToy(seed=seed)
    data = toy.dataset(n_train=int(toy_cfg["n_train"]), n_val=500, n_test=int(toy_cfg["n_test"]), seed=seed)
    torch.manual_seed(seed)
    gebm = gp.GEBM(gp.MLPGenerator(2, 3, hidden=list(toy_cfg["hidden"]), output="identity"),
                   gp.EnergyMLP(3, hidden=list(toy_cfg["energy_hidden"])))
    start = time.perf_counter()
    gp.fit_adversarial(gebm, data.train, data.val, objective="kale", steps=int(toy_cfg["steps"]),
                       batch_size=int(toy_cfg["batch_size"]), lr=float(toy_cfg["lr"]),
                       penalty=float(toy_cfg["penalty"]), eval_every=int(toy_cfg["steps"]),
                       log_partition_samples=2000, seed=seed, progress=False)
    train_time = time.perf_counter() - start
    n = int(toy_cfg["num_samples"])
    test = torch.as_tensor(data.test)
    samples = {
        "data (second draw)": toy.sample(n, generator=torch.Generator().manual_seed(seed + 1)).numpy(),
        "generator": generator_samples(gebm, n, seed + 2),
        "gebm-ula": np.asarray(gp.sample_latent(gebm, "ula", num_samples=1, warmup_steps=500, num_chains=n,
                                                seed=seed + 3, step_size=0.01).posterior["x"].values
                               ).reshape(n, 3),
    }
    q = [5, 25, 50, 75, 95]
    out = {"train_time": train_time, "radius_quantiles": q,
           "test_radius": np.percentile(toy.radius(test).numpy(), q).tolist(), "methods": {}}
    for name, x in samples.items():
        out["methods"][name] = {"mmd": float(gp.metrics.mmd(x, data.test)),
                                "radius": np.percentile(toy.radius(torch.as_tensor(x)).numpy(), q).tolist(),
                                "manifold_error": float(toy.manifold_error(torch.as_tensor(x)).mean())}
    out["radii"] = {name: toy.radius(torch.as_tensor(x)).numpy() for name, x in samples.items()}
    out["radii"]["test"] = toy.radius(test).numpy()
    return out


# ----------------------------------------------------------------------------------------------- output


def write_hdf5(path: Path, summary: dict, per_seed: list[dict], toy: dict | None) -> None:
    import h5py

    with atomic_open(path, "w+b") as fh, h5py.File(fh, "w") as f:
        for name, row in summary.items():
            g = f.create_group(f"summary/{name}")
            for key, (mean, se) in row.items():
                g.create_dataset(key, data=np.array([mean, se]))
        for i, s in enumerate(per_seed):
            for name, images in s["grids"].items():
                f.create_dataset(f"seed{i}/grids/{name}", data=np.asarray(images, dtype=np.float32))
            for method, (steps, fds) in s["curves"].items():
                f.create_dataset(f"seed{i}/curves/{method}", data=np.array([steps, fds], dtype=float))
        if toy is not None:
            for name, r in toy["radii"].items():
                f.create_dataset(f"toy/radii/{name}", data=np.asarray(r, dtype=np.float32))


def _fmt(mean: float, se: float, digits: int = 2) -> str:
    if math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def table(summary: dict, floor: float, n_seeds: int) -> str:
    """The results as a Markdown table (means ± standard errors over seeds)."""
    head = ("| method | FD ↓ | KID ↓ | modes (of 10) ↑ | label KL (nats) ↓ | confident ↑ | labels/chain | "
            "grad evals/image | energy evals/image | time (s) |")
    lines = [head, "|" + "---|" * 10]
    for name, row in summary.items():
        visits = _fmt(*row["labels_visited"]) if "labels_visited" in row else "–"
        lines.append(
            f"| {name} | {_fmt(*row['fd'])} | {_fmt(*row['kid'])} | {_fmt(*row['modes_covered'], 1)} | "
            f"{_fmt(*row['label_kl'], 3)} | {_fmt(*row['confident_fraction'])} | {visits} | "
            f"{row['grad_evals_per_image'][0]:.0f} | {row['energy_evals_per_image'][0]:.0f} | "
            f"{_fmt(*row['time'], 1)} |"
        )
    lines.append(f"| floor FD(train, test) | {floor:.2f} | | | | | | | | |")
    if "fd_draw_spread" in summary.get("generator", {}):
        lines.append("")
        lines.append(f"FD spread between two independent generator draws of the same size, |FD₁ − FD₂|: "
                     f"{_fmt(*summary['generator']['fd_draw_spread'])}.")
    lines.append("")
    lines.append(f"Means ± standard errors over {n_seeds} training seed(s). FD, KID: classifier-feature distances "
                 "to the test split (lower is better); labels/chain: distinct predicted labels among a chain's "
                 "recorded states.")
    return "\n".join(lines)


def chosen_table(per_seed: list[dict]) -> str:
    """The validation-chosen settings of every seed (T, step size, decay, steps) and their validation FD."""
    lines = ["| row | seed | chosen setting | steps | FD to validation |", "|---|---|---|---|---|"]
    for i, s in enumerate(per_seed):
        for name, c in s["chosen"].items():
            setting = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in c["settings"].items())
            lines.append(f"| {name} | {i} | {setting} | {c['steps']} | {c['fd_val']:.2f} |")
    return "\n".join(lines)


def toy_table(toy: dict) -> str:
    q = toy["radius_quantiles"]
    lines = ["| samples | MMD² to test ↓ | mean manifold error | radius quantiles " + "/".join(f"{p}%" for p in q)
             + " |", "|---|---|---|---|"]
    for name, m in toy["methods"].items():
        lines.append(f"| {name} | {m['mmd']:.4f} | {m['manifold_error']:.3f} | "
                     + " / ".join(f"{r:.3f}" for r in m["radius"]) + " |")
    lines.append("| test data | | | " + " / ".join(f"{r:.3f}" for r in toy["test_radius"]) + " |")
    return "\n".join(lines)


def _mosaic(images: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """Tile ``images`` ``[n, h, w]`` or ``[n, h, w, 3]`` into rows of ``cols``, ``gap`` NaN pixels between them
    (drawn in the colormap's "bad" colour, so that neighbouring digits never touch)."""
    n, h, w = images.shape[:3]
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *images.shape[3:]), np.nan)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = img
    return out


def _grid_figure(path: Path, grids: dict, image_shape, plt, per_panel: int = 36, panels_per_row: int = 3) -> None:
    """The sample grid: one labelled panel per method, ``panels_per_row`` panels a row, each the first
    ``per_panel`` images (a square), in [-1, 1], with a gap between images and between panels."""
    c, h, w = image_shape
    names = list(grids)
    side = max(int(math.isqrt(per_panel)), 1)
    rows = -(-len(names) // panels_per_row)
    fig, axes = plt.subplots(rows, panels_per_row, figsize=(2.5 * panels_per_row, 2.75 * rows), squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    for ax, name in zip(axes.flat, names, strict=False):
        imgs = np.asarray(grids[name], dtype=float)[: side * side]
        imgs = imgs.reshape(-1, h, w) if c == 1 else imgs.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        mosaic = _mosaic(imgs, side)
        if c == 1:
            ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        else:  # RGB in [-1, 1] to [0, 1]; the NaN gaps white
            ax.imshow(np.nan_to_num((mosaic + 1) / 2, nan=1.0).clip(0, 1), interpolation="nearest")
        ax.set_title(name, fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout(h_pad=1.0, w_pad=1.0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def figures(out: Path, per_seed: list[dict], image_shape, toy: dict | None) -> list[Path]:
    """Sample grids per method (first seed) and FD against MCMC steps (mean over seeds); the toy's radii."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "latent_sampling_grids.png"]
    _grid_figure(paths[-1], per_seed[0]["grids"], image_shape, plt, panels_per_row=4)

    names = list(per_seed[0]["curves"])
    groups = [[m for m in names if not m.endswith("-val") and m != "ebm"], [m for m in names if m.endswith("-val")],
              [m for m in names if m == "ebm"]]
    groups = [g for g in groups if g]
    titles = {0: "T = 1 (the model)", 1: "validation-chosen settings"}
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for j, (ax, group) in enumerate(zip(axes.flat, groups, strict=True)):
        for name in group:
            steps = per_seed[0]["curves"][name][0]
            same = all(s["curves"][name][0] == steps for s in per_seed)
            if same:  # the mean over seeds; else (validation-chosen steps differ by seed) each seed's curve
                ax.plot(steps, np.mean([s["curves"][name][1] for s in per_seed], axis=0), marker="o", ms=3,
                        label=name)
            else:
                for i, s in enumerate(per_seed):
                    ax.plot(*s["curves"][name], marker="o", ms=3, alpha=0.7, label=f"{name} (seed {i})")
        ax.set_xlabel("MCMC transitions per chain")
        ax.set_ylabel("FD to test (lower is better)")
        ax.set_title(titles.get(j, "EBM: data-space Langevin from noise") if group != ["ebm"]
                     else "EBM: data-space Langevin from noise", fontsize=10)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "latent_sampling_fd_steps.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if toy is not None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, r in toy["radii"].items():
            ax.hist(r, bins=40, histtype="step", density=True, label=name)
        ax.set_xlabel("radius ‖x‖")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "latent_sampling_toy_radius.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="TOML config (default models/images/digits.toml, "
                                                  "or mnist.toml with --full)")
    p.add_argument("--data", default=None, choices=sorted(q.stem for q in MODELS.glob("*.toml")),
                   help="a model of models/images/ by name (digits: 8x8, quick; mnist: conv nets; mnist-mlp: "
                        "MLP nets on MNIST, the fast one)")
    p.add_argument("--full", action="store_true", help="MNIST, paper-scale settings (hours on a CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seeds", type=int, default=None, help="number of training seeds (default: the config's)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated samplers of {METHODS}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    p.add_argument("--no-toy", action="store_true", help="skip the deformed-sphere toy")
    p.add_argument("--workers", type=int, default=2, help="training seeds run in this many processes (default 2; "
                   "1: one after another in this process)")
    p.add_argument("--out", default=None, help="results folder (default results/latent_sampling/<data>)")
    return p


def _log(msg: str) -> None:
    """Plain progress lines on stderr (also when it is not a terminal, and from worker processes)."""
    print(msg, file=sys.stderr, flush=True)


def _seed_job(cfg: dict, name: str, seed: int, methods, threads: int) -> dict:
    """:func:`evaluate_seed` in a worker process: its own data, cached classifier and torch threads."""
    torch.set_num_threads(threads)
    data = gp.data.load(name, seed=0)
    return evaluate_seed(cfg, data, gp.metrics.load_classifier(data), seed, methods, _log)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config and args.data:
        raise SystemExit("--config and --data: give one of them.")
    config = args.config or args.data or ("mnist" if args.full else "digits")
    cfg = load_config(config, args.set, full=args.full and (args.config or args.data) is not None)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown sampler(s) {bad}; expected some of {METHODS}.")
    n_seeds = int(args.seeds if args.seeds is not None else cfg.get("seeds", 3))
    name = cfg["data"]["name"]
    out = Path(args.out or Path("results") / "latent_sampling" / Path(config).stem)

    log = _log
    start = time.perf_counter()
    data = gp.data.load(name, seed=0)
    classifier = gp.metrics.load_classifier(data)
    floor = gp.metrics.fd_floor(data, classifier)
    log(f"{name}: {data.train.shape[0]} train / {data.test.shape[0]} test images {tuple(data.image_shape)}, "
        f"classifier val accuracy {classifier.info.get('val_accuracy', math.nan):.3f}, floor FD {floor:.2f}")
    workers = max(1, min(int(args.workers), n_seeds))
    run_the_toy = not args.no_toy and "toy" in cfg
    toy = None
    if workers == 1:
        per_seed = [evaluate_seed(cfg, data, classifier, seed, methods, log) for seed in range(n_seeds)]
    else:  # one process per training seed (spawned: each seeds itself, reads the cached classifier)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        log(f"{n_seeds} training seeds on {workers} worker processes ({args.threads or 1} torch thread each)")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_seed_job, cfg, name, seed, methods, args.threads or 1) for seed in range(n_seeds)]
            if run_the_toy:  # in this process while the workers train (the last round leaves a core free)
                log("toy: deformed sphere")
                toy = run_toy(cfg, seed=0)
            per_seed = [f.result() for f in futures]
    summary = summarise(per_seed)
    if run_the_toy and toy is None:
        log("toy: deformed sphere")
        toy = run_toy(cfg, seed=0)
    wall = time.perf_counter() - start

    entries = claims(per_seed)
    text = table(summary, floor, n_seeds) + "\n\n" + claims_table(
        entries, [s["rows"]["generator"]["fd_draw_spread"] for s in per_seed]) + "\n\n" + chosen_table(per_seed)
    print(text)
    if toy is not None:
        print()
        print(toy_table(toy))
    result = {
        "data": name, "config": cfg, "seeds": n_seeds, "methods": list(methods), "floor_fd": floor,
        "wall_time": wall, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "summary": {k: {m: list(v) for m, v in row.items()} for k, row in summary.items()},
        "claims": entries,
        "per_seed": [{"rows": s["rows"], "train": s["train"], "chosen": s["chosen"],
                      "curves": {m: [list(map(float, a)) for a in c] for m, c in s["curves"].items()}}
                     for s in per_seed],
        "toy": None if toy is None else {k: v for k, v in toy.items() if k != "radii"},
    }
    write_json(out / "latent_sampling.json", result)
    write_hdf5(out / "latent_sampling.h5", summary, per_seed, toy)
    with atomic_open(out / "latent_sampling.md", "w") as f:
        f.write(text + ("\n\n" + toy_table(toy) if toy is not None else "") + "\n")
    figures(out, per_seed, tuple(data.image_shape), toy)
    print(f"\nwall time {wall:.0f} s; results in {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
