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
    python benchmarks/latent_sampling.py --full          # MNIST (models/images/mnist.toml)
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


def run_sampler(gebm: gp.GEBM, method: str, cfg: dict, n: int, seed: int) -> dict:
    """Draw ``n`` images of the GEBM with a latent sampler.

    The chain samplers (ULA, kinetic, MALA, IMH) run n chains from z₀ ∼ N(0, I) for ``mcmc_steps``
    transitions and keep the last state of each chain as its image; ``curve_points`` intermediate
    states are recorded for the FD-against-steps curve and the labels each chain visits. HMC runs
    fewer, longer chains (their draws pooled); DOT maps n prior draws.

    Returns a dict with ``x`` ``[n, D]``, ``path`` ``[n, K, D]`` (chain samplers; None otherwise),
    ``steps`` (transitions at each recorded state), and the run's ``num_grad_evals``,
    ``num_energy_evals``, ``sampling_time``.
    """
    bench = cfg["benchmark"]
    kw = dict(bench.get("samplers", {}).get(method, {}))
    backend = kw.pop("backend", "pyro")
    total = int(bench["mcmc_steps"])
    if method in CHAIN_METHODS:
        points = int(bench["curve_points"])
        thin = max(1, total // points)
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


def evaluate_seed(cfg: dict, data, classifier, seed: int, methods=METHODS, log=print) -> dict:
    """Train the GEBM and the GAN with one seed and score the generator, the GAN and every sampler.

    Returns ``{"rows": {name: metrics}, "curves": {method: (steps, fds)}, "grids": {name: images},
    "train": {...}}``; each row has the metrics of :func:`score` plus ``grad_evals_per_image``,
    ``energy_evals_per_image``, ``time`` (seconds) and, for chain samplers, ``labels_visited``.
    """
    bench = cfg["benchmark"]
    n = int(bench["num_samples"])
    grid = int(bench.get("grid", 64))
    rows, curves, grids, info = {}, {}, {}, {}

    def record(name, x, extra):
        rows[name] = {**score(x, data, classifier), **extra}
        grids[name] = x[:grid]
        log(f"  seed {seed} {name:<14} FD {rows[name]['fd']:8.3f}  ({extra.get('time', 0.0):.1f} s)")

    gebm, info["kale"] = train(cfg, data, "kale", seed)
    kale = info["kale"]
    log(f"  seed {seed} trained GEBM (KALE) in {kale['train_time']:.1f} s, val KALE {kale['kale_val']:.3f}")
    t = time.perf_counter()
    x = generator_samples(gebm, n, 10_000 + seed)
    record("generator", x, {"time": time.perf_counter() - t, "grad_evals_per_image": 0.0,
                            "energy_evals_per_image": 0.0})
    # the spread between independent generator draws: the noise level of an FD difference
    second = score(generator_samples(gebm, n, 20_000 + seed), data, classifier)["fd"]
    rows["generator"]["fd_draw_spread"] = abs(second - rows["generator"]["fd"])
    for method in methods:
        out = run_sampler(gebm, method, cfg, n, seed)
        extra = {"time": out["sampling_time"], "grad_evals_per_image": out["num_grad_evals"] / n,
                 "energy_evals_per_image": out["num_energy_evals"] / n}
        if out["path"] is not None:
            extra["labels_visited"] = labels_visited(out["path"], classifier)
            fds = [score(out["path"][:, k], data, classifier)["fd"] for k in range(out["path"].shape[1])]
            curves[method] = ([0, *out["steps"]], [rows["generator"]["fd"], *fds])
        record(f"gebm-{method}", out["x"], extra)
    control = run_sampler(zero_energy(gebm), "ula", cfg, n, seed)
    record("control-E0-ula", control["x"], {"time": control["sampling_time"],
                                             "grad_evals_per_image": control["num_grad_evals"] / n,
                                             "energy_evals_per_image": control["num_energy_evals"] / n})
    gan, info["gan"] = train(cfg, data, "gan", seed)
    log(f"  seed {seed} trained GAN in {info['gan']['train_time']:.1f} s")
    t = time.perf_counter()
    record("gan", generator_samples(gan, n, 10_000 + seed), {"time": time.perf_counter() - t,
                                                             "grad_evals_per_image": 0.0,
                                                             "energy_evals_per_image": 0.0})
    return {"rows": rows, "curves": curves, "grids": grids, "train": info}


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
    _grid_figure(paths[-1], per_seed[0]["grids"], image_shape, plt)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method in per_seed[0]["curves"]:
        steps = per_seed[0]["curves"][method][0]
        fds = np.mean([s["curves"][method][1] for s in per_seed], axis=0)
        ax.plot(steps, fds, marker="o", ms=3, label=method)
    ax.set_xlabel("MCMC transitions per chain")
    ax.set_ylabel("FD to test (lower is better)")
    ax.legend(fontsize=8)
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
    p.add_argument("--full", action="store_true", help="MNIST, paper-scale settings (hours on a CPU)")
    p.add_argument("--seeds", type=int, default=None, help="number of training seeds (default: the config's)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated samplers of {METHODS}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    p.add_argument("--no-toy", action="store_true", help="skip the deformed-sphere toy")
    p.add_argument("--out", default=None, help="results folder (default results/latent_sampling/<data>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = args.config or ("mnist" if args.full else "digits")
    cfg = load_config(config, args.set, full=args.full and args.config is not None)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown sampler(s) {bad}; expected some of {METHODS}.")
    n_seeds = int(args.seeds if args.seeds is not None else cfg.get("seeds", 3))
    name = cfg["data"]["name"]
    out = Path(args.out or Path("results") / "latent_sampling" / name)

    def log(msg: str) -> None:  # plain progress lines (also when stderr is not a terminal)
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    data = gp.data.load(name, seed=0)
    classifier = gp.metrics.load_classifier(data)
    floor = gp.metrics.fd_floor(data, classifier)
    log(f"{name}: {data.train.shape[0]} train / {data.test.shape[0]} test images {tuple(data.image_shape)}, "
        f"classifier val accuracy {classifier.info.get('val_accuracy', math.nan):.3f}, floor FD {floor:.2f}")
    per_seed = []
    for seed in range(n_seeds):
        per_seed.append(evaluate_seed(cfg, data, classifier, seed, methods, log))
    summary = summarise(per_seed)
    toy = None
    if not args.no_toy and "toy" in cfg:
        log("toy: deformed sphere")
        toy = run_toy(cfg, seed=0)
    wall = time.perf_counter() - start

    text = table(summary, floor, n_seeds)
    print(text)
    if toy is not None:
        print()
        print(toy_table(toy))
    result = {
        "data": name, "config": cfg, "seeds": n_seeds, "methods": list(methods), "floor_fd": floor,
        "wall_time": wall, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "summary": {k: {m: list(v) for m, v in row.items()} for k, row in summary.items()},
        "per_seed": [{"rows": s["rows"], "train": s["train"],
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
