"""Seconds per generator step of image training: the step before the speed work, the step now, and a bare floor.

    python benchmarks/training_speed.py --images --before /work/before [--nets conv,conv-s2,conv-s2-lazy,mlp]
        [--objectives kale,gan] [--threads 1,2] [--steps 3] [--rounds 3] [--no-extras] [--json F] [--markdown F]

The default takes about 5 minutes on a quiet 2-core machine.

Three implementations of one generator step of ``gp.fit_adversarial`` on MNIST-sized images (28×28, batch 64,
5 energy steps with the gradient penalty λ = 1, Adam β = (0.5, 0.999)) are timed in ONE run, alternating
(before, now, floor, before, now, floor, ...) on the same networks (same seed) and thread count:

* **before**: ``gp.fit_adversarial`` imported from the checkout given by ``--before`` (a worker process
  started with ``PYTHONPATH=<that path>``; nothing old is copied here);
* **now**: ``gp.fit_adversarial`` of this checkout;
* **floor**: a hand-written loop with the same networks, losses, penalty and optimisers and none of the
  library's bookkeeping (no checks, no float64 objective, no history): what the arithmetic costs.

Each figure is the time of ``1 + steps`` generator steps minus that of 1 step (so set-up and the final
evaluation cancel), divided by ``steps``; wall and process CPU seconds are both kept (on a loaded machine
the CPU seconds of one thread are the steadier figure). Each cell is the median over ``--rounds``.
The networks (``VARIANTS``): ``conv`` is ConvGenerator d = 16, channels 64-32-16 and ConvEnergy 16-32-64
(spectral norm, floor −10) with the 3×3 stride-1 first layer of before; ``conv-s2`` the DCGAN first layer
(models/images/mnist.toml); ``conv-s2-lazy`` that with ``penalty_every=5``; ``mlp`` models/images/mnist-mlp.toml's.
Unless ``--no-extras``, ``fit_kale`` energy-only (the tune stage) and latent ULA are timed too (first thread
count only). Data: 256 random images in [−1, 1] (a step's cost does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("before", "now", "floor")


# ----------------------------------------------------------------------------- worker side (old or new library)
# The networks of each variant; "before" (the old library) runs BEFORE[variant], the old network of that variant.
VARIANTS = {
    "conv": "models/images/mnist.toml's nets before the speed work: ConvEnergy with a 3×3 stride-1 first layer",
    "conv-s2": "ConvEnergy with the DCGAN 4×4 stride-2 first layer (first_stride=2; before: the conv nets)",
    "conv-s2-lazy": "conv-s2 with the penalty at 1 energy step in 5 (penalty_every=5; before: the conv nets)",
    "mlp": "models/images/mnist-mlp.toml's nets: MLPGenerator 16-256-512-784, EnergyMLP 784-512-256-1",
}
BEFORE = {"conv": "conv", "conv-s2": "conv", "conv-s2-lazy": "conv", "mlp": "mlp"}
PENALTY_EVERY = {"conv-s2-lazy": 5}


def _networks(net: str):
    import torch

    import gebm_ppl as gp

    torch.manual_seed(0)
    if net.startswith("conv"):
        base = gp.ConvGenerator(16, (1, 28, 28), channels=(64, 32, 16))
        extra = {} if net == "conv" else {"first_stride": 2}
        energy = gp.ConvEnergy((1, 28, 28), channels=(16, 32, 64), **extra)
    elif net == "mlp":
        base = gp.MLPGenerator(16, 784, hidden=(256, 512), image_shape=(1, 28, 28))
        energy = gp.EnergyMLP(784, hidden=(512, 256), floor=-10.0)
    else:
        raise ValueError(f"'net' should be one of {sorted(VARIANTS)}. Got {net!r}.")
    return gp.GEBM(base, energy)


def _data():
    import torch

    g = torch.Generator().manual_seed(1)
    return torch.rand(256, 784, generator=g) * 2 - 1


SETTINGS = dict(batch_size=64, energy_steps=5, burst_steps=0, burst_every=None, penalty=1.0, lr=1e-4,
                betas=(0.5, 0.999), eval_every=1000, log_partition_samples=64, progress=False)  # fmt: skip


_WARM: set = set()


def _library(net: str, objective: str, steps: int) -> tuple[float, float]:
    import torch

    import gebm_ppl as gp

    x = _data()

    def run(n: int) -> tuple[float, float]:
        gebm = _networks(net)
        w, c = time.perf_counter(), time.process_time()
        extra = {"penalty_every": PENALTY_EVERY[net]} if net in PENALTY_EVERY else {}
        gp.fit_adversarial(gebm, x, objective=objective, steps=n, seed=0, **SETTINGS, **extra)
        return time.perf_counter() - w, time.process_time() - c

    if (net, objective, torch.get_num_threads()) not in _WARM:  # first-call costs of the kernels
        run(1)
        _WARM.add((net, objective, torch.get_num_threads()))
    w1, c1 = run(1)
    wn, cn = run(1 + steps)
    return (wn - w1) / steps, (cn - c1) / steps


def _floor(net: str, objective: str, steps: int) -> tuple[float, float]:
    """The same step by hand: networks called directly, float32 losses, spectral norm once per energy step."""
    import torch
    import torch.nn.functional as F
    from torch.nn.utils import parametrize

    gebm = _networks(net)
    base, energy, c = gebm.base, gebm.energy, gebm.log_partition
    x_train = _data()
    kale = objective == "kale"
    e_params = [*energy.parameters(), *([c] if kale else [])]
    e_opt = torch.optim.Adam(e_params, lr=SETTINGS["lr"], betas=SETTINGS["betas"])
    g_opt = torch.optim.Adam(base.parameters(), lr=SETTINGS["lr"], betas=SETTINGS["betas"])
    n, lam, log_m = SETTINGS["batch_size"], SETTINGS["penalty"], math.log(SETTINGS["batch_size"])
    if net.startswith("conv"):
        shape = (-1, *energy.image_shape)

        def gen(z):
            return base.net(base.project(z).reshape(-1, *base.start)).reshape(z.shape[0], -1)

        def ener(x):
            e = energy.head(energy.features(x.reshape(shape)).flatten(1)).squeeze(-1)
            return -10.0 + F.softplus(e + 10.0)
    else:
        def gen(z):
            return base.net(z)

        def ener(x):
            return -10.0 + F.softplus(energy.net(x).squeeze(-1) + 10.0)

    g = torch.Generator().manual_seed(0)

    every = PENALTY_EVERY.get(net, 1)

    def step() -> None:
        for j in range(SETTINGS["energy_steps"]):
            x = x_train[torch.randperm(x_train.shape[0], generator=g)[:n]]
            z = torch.randn(n, base.latent_dim, generator=g)
            t = torch.rand(n, 1, generator=g)
            with torch.no_grad():
                xb = gen(z)
            x_hat = (t * x + (1 - t) * xb).requires_grad_(True)
            with parametrize.cached():
                e = ener(torch.cat([x, xb]))
                ed, eb = e[:n], e[n:]
                pen = 0.0
                if j % every == 0:
                    (grad,) = torch.autograd.grad(ener(x_hat).sum(), x_hat, create_graph=True)
                    pen = lam * (grad * grad).sum() / n
                if kale:
                    loss = (ed + c).mean() + torch.exp(torch.logsumexp(-(eb + c), 0) - log_m) + pen
                else:
                    loss = F.softplus(ed).mean() + F.softplus(-eb).mean() + pen
                e_opt.zero_grad(set_to_none=True)
                loss.backward()
            e_opt.step()
        z = torch.randn(n, base.latent_dim, generator=g)
        for p in energy.parameters():
            p.requires_grad_(False)
        with parametrize.cached():
            e = ener(gen(z))
            loss = (torch.softmax(-e.detach(), 0) * e).sum() if kale else F.softplus(e).mean()
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
        for p in energy.parameters():
            p.requires_grad_(True)
        g_opt.step()

    with torch.enable_grad():
        gebm.train()
        step()
        w, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        return (time.perf_counter() - w) / steps, (time.process_time() - cpu) / steps


def _tune(net: str, objective: str, steps: int) -> tuple[float, float]:
    """Seconds per energy step of ``fit_kale`` energy-only on the frozen generator (the paper's "tune" stage):
    batch 64, one base sample per data point, the penalty λ = 1 at every step (``objective`` is unused)."""
    import gebm_ppl as gp

    x = _data()
    kw = dict(epochs=1, batch_size=64, noise_factor=1, penalty=1.0, log_partition_samples=64, patience=None,
              schedule=None, progress=False, seed=0)  # fmt: skip

    def run(n: int) -> tuple[float, float]:
        gebm = _networks(net)
        w, c = time.perf_counter(), time.process_time()
        gp.fit_kale(gebm, x, max_steps=n, **kw)
        return time.perf_counter() - w, time.process_time() - c

    run(1)
    w1, c1 = run(1)
    wn, cn = run(1 + 5 * steps)
    return (wn - w1) / (5 * steps), (cn - c1) / (5 * steps)


def _ula(net: str, objective: str, steps: int) -> tuple[float, float]:
    """Seconds per ULA transition of 256 latent chains on U(z) = ½‖z‖² + E(G(z)) (the gradient through G and E)."""
    import gebm_ppl as gp

    gebm = _networks(net).eval()

    def run(n: int) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        gp.sample_latent(gebm, method="ula", num_samples=1, warmup_steps=n, num_chains=256, step_size=1e-3)
        return time.perf_counter() - w, time.process_time() - c

    run(1)
    w1, c1 = run(1)
    wn, cn = run(1 + 5 * steps)
    return (wn - w1) / (5 * steps), (cn - c1) / (5 * steps)


def worker() -> None:
    """Answer JSON requests on stdin, one per line: {"impl", "net", "objective", "threads", "steps"}."""
    import torch

    print(json.dumps({"ready": True, "gebm_ppl": __import__("gebm_ppl").__file__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        torch.set_num_threads(req["threads"])
        fn = {"floor": _floor, "tune": _tune, "ula": _ula}.get(req["impl"], _library)
        wall, cpu = fn(req["net"], req["objective"], req["steps"])
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


# ----------------------------------------------------------------------------- driver
class Worker:
    """A worker process importing gebm_ppl from ``path`` (PYTHONPATH), kept alive between requests."""

    def __init__(self, path: Path):
        env = {**os.environ, "PYTHONPATH": str(path)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(path))  # fmt: skip
        hello = json.loads(self.proc.stdout.readline())
        self.module = hello["gebm_ppl"]
        if not Path(self.module).resolve().is_relative_to(path.resolve()):
            raise RuntimeError(f"the worker for {path} imported gebm_ppl from {self.module}.")

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker ({self.module}) died on {req}.")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def machine() -> dict:
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="path of a checkout of the earlier commit")
    parser.add_argument("--nets", default="conv,conv-s2,conv-s2-lazy,mlp", help=f"variants among {sorted(VARIANTS)}")
    parser.add_argument("--objectives", default="kale,gan")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=3, help="timed generator steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternations (median reported)")
    parser.add_argument("--no-extras", action="store_true", help="skip the fit_kale (tune) and latent-ULA timings")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    before = Path(args.before)
    if not (before / "gebm_ppl" / "__init__.py").is_file():
        raise SystemExit(f"--before {before}: no gebm_ppl/__init__.py there (expected a checkout of this project).")
    unknown = sorted(set(args.nets.split(",")) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--nets: unknown variants {unknown}; expected some of {sorted(VARIANTS)}.")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"load average {' '.join(f'{v:.2f}' for v in info['load_average'])}", flush=True)  # fmt: skip
    if info["load_average"][0] > 1.0:
        print(f"warning: load average {info['load_average'][0]:.1f}: other jobs are running; ratios stay comparable "
              "(alternated), absolute times do not, and multi-thread timings degrade badly (OpenMP threads wait "
              "for descheduled siblings).", flush=True)  # fmt: skip
    workers = {"before": Worker(before), "now": Worker(ROOT)}
    workers["floor"] = workers["now"]
    cells = [(net, obj, int(t)) for net in args.nets.split(",") for obj in args.objectives.split(",")
             for t in args.threads.split(",")]  # fmt: skip
    times: dict[tuple, dict[str, list]] = {cell: {impl: [] for impl in IMPLS} for cell in cells}
    extra_cells = [] if args.no_extras else [(kind, net, int(args.threads.split(",")[0]))
                                             for kind in ("tune", "ula") for net in ("conv", "conv-s2")]  # fmt: skip
    extras: dict[tuple, dict[str, list]] = {cell: {"before": [], "now": []} for cell in extra_cells}
    start = time.perf_counter()
    try:
        for r in range(args.rounds):
            for cell in cells:
                net, obj, t = cell
                for impl in IMPLS:
                    which = BEFORE[net] if impl == "before" else net
                    out = workers[impl].ask(impl=impl, net=which, objective=obj, threads=t, steps=args.steps)
                    times[cell][impl].append(out)
            for cell in extra_cells:
                kind, net, t = cell
                for impl in ("before", "now"):
                    which = BEFORE[net] if impl == "before" else net
                    out = workers[impl].ask(impl=kind, net=which, objective="kale", threads=t, steps=args.steps)
                    extras[cell][impl].append(out)
            print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        workers["before"].close()
        workers["now"].close()
    rows = []
    for (net, obj, t), by in times.items():
        row = {"net": net, "objective": obj, "threads": t}
        for impl in IMPLS:
            row[f"{impl}_wall_s"] = statistics.median(o["wall"] for o in by[impl])
            row[f"{impl}_cpu_s"] = statistics.median(o["cpu"] for o in by[impl])
        # ratios of medians of the per-round ratios (alternated side by side)
        for key in ("wall", "cpu"):
            pairs = zip(by["before"], by["now"], by["floor"], strict=True)
            ratios = [(b[key] / n[key], n[key] / f[key]) for b, n, f in pairs]
            row[f"speedup_{key}"] = statistics.median(r[0] for r in ratios)
            row[f"over_floor_{key}"] = statistics.median(r[1] for r in ratios)
        rows.append(row)
    extra_rows = []
    for (kind, net, t), by in extras.items():
        row = {"kind": kind, "net": net, "threads": t}
        for impl in ("before", "now"):
            row[f"{impl}_wall_s"] = statistics.median(o["wall"] for o in by[impl])
            row[f"{impl}_cpu_s"] = statistics.median(o["cpu"] for o in by[impl])
        for key in ("wall", "cpu"):
            pairs = zip(by["before"], by["now"], strict=True)
            row[f"speedup_{key}"] = statistics.median(b[key] / n[key] for b, n in pairs)
        extra_rows.append(row)
    info["load_average_end"] = list(os.getloadavg())
    result = {"machine": info, "settings": {k: v for k, v in SETTINGS.items() if k != "betas"},
              "steps": args.steps, "rounds": args.rounds, "before": str(before),
              "wall_total_s": time.perf_counter() - start, "rows": rows, "extras": extra_rows}  # fmt: skip
    table = markdown(result)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return result


def markdown(result: dict) -> str:
    """The speed table: seconds per generator step (wall; CPU in brackets), before / now / floor and the ratios."""
    m = result["machine"]
    head = (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average at start "
            f"{m['load_average'][0]:.2f}, at end {m['load_average_end'][0]:.2f}; {result['rounds']} rounds × "
            f"{result['steps']} generator steps per cell, medians; total "
            f"{result['wall_total_s']:.0f} s.\n\n")  # fmt: skip
    lines = ["| net | objective | threads | before s/step | now s/step | floor s/step | before / now | now / floor |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        cell = [f"{r[f'{i}_wall_s']:.3f} ({r[f'{i}_cpu_s']:.3f})" for i in IMPLS]
        lines.append(f"| {r['net']} | {r['objective']} | {r['threads']} | {' | '.join(cell)} | "
                     f"{r['speedup_wall']:.2f}× ({r['speedup_cpu']:.2f}×) | "
                     f"{r['over_floor_wall']:.2f}× ({r['over_floor_cpu']:.2f}×) |")  # fmt: skip
    names = sorted({r["net"] for r in result["rows"]})
    notes = "\n".join(f"- `{v}`: {VARIANTS[v]}." for v in names)
    legend = "\n\nSeconds per generator step, wall (process CPU in brackets). Variants:\n"
    out = head + "\n".join(lines) + legend + notes
    if result.get("extras"):
        what = {"tune": "fit_kale energy-only on the frozen generator, s per energy step (batch 64, λ = 1)",
                "ula": "latent ULA, s per transition of 256 chains (gradient through G and E)"}  # fmt: skip
        out += ("\n\n| stage | net | threads | before s | now s | before / now |\n|---|---|---|---|---|---|\n"
                + "\n".join(f"| {r['kind']} | {r['net']} | {r['threads']} | {r['before_wall_s']:.4f} "
                            f"({r['before_cpu_s']:.4f}) | {r['now_wall_s']:.4f} ({r['now_cpu_s']:.4f}) | "
                            f"{r['speedup_wall']:.2f}× ({r['speedup_cpu']:.2f}×) |" for r in result["extras"])
                + "\n\n" + "\n".join(f"- `{k}`: {v}." for k, v in what.items()))  # fmt: skip
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main()
