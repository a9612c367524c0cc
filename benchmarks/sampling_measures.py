"""Measures of the sampling-speed benchmark: ESS, R-hat and timings of a run, and the gradient floor of U.

The gradient floor is the time of one value-and-gradient of U(z) = ½‖z‖² + E(G_θ(z)) inside a compiled
JAX loop (batched over the chains as vectorised NUTS calls it), and by torch autograd for comparison.
"""

from __future__ import annotations

import time

import torch

import gebm_ppl as gp

__all__ = ["gradient_floor", "record"]


def _ess_min(idata, var: str) -> float:
    import arviz as az

    return float(az.ess(idata, var_names=[var], method="bulk")[var].min())


def _rhat_max(idata, var: str) -> float:
    import arviz as az

    return float(az.rhat(idata, var_names=[var])[var].max())


def record(idata, cpu_time: float) -> dict:
    a = idata.attrs
    stats = idata.sample_stats
    wall = float(a["sampling_time"])
    compile_time = float(a.get("compile_time", 0.0))
    ess = _ess_min(idata, "x")
    rec = {
        "chains": int(idata.posterior.sizes["chain"]),
        "draws": int(idata.posterior.sizes["draw"]),
        "wall_time": wall,
        "compile_time": compile_time,
        "run_time": wall - compile_time,
        "grad_evals": int(a["num_grad_evals"]),
        "min_ess_bulk_x": ess,
        "min_ess_bulk_z": _ess_min(idata, "z"),
        "max_rhat_x": _rhat_max(idata, "x"),
        "ess_per_s": ess / wall,
        "ess_per_s_run": ess / max(wall - compile_time, 1e-9),
        "ess_per_grad": ess / max(int(a["num_grad_evals"]), 1),
        # CPU seconds of this process (all threads) for the whole call: less sensitive to other load
        "cpu_time": cpu_time,
        "ess_per_cpu_s": ess / max(cpu_time, 1e-9),
    }
    if "n_steps" in stats:
        n_steps = stats["n_steps"].values
        rec["mean_n_steps"] = float(n_steps.mean())
        # vectorised chains advance in lockstep: each iteration costs the longest trajectory among chains
        rec["lockstep_factor"] = float(n_steps.max(0).sum() / n_steps.mean(0).sum())
        rec["divergences"] = int(stats["diverging"].values.sum())
        rec["mean_acceptance"] = float(stats["acceptance_rate"].values.mean())
        rec["step_size"] = float(stats["step_size"].values.mean())
    return rec


def _time_calls(fn, repeats: int) -> float:
    """Seconds per call of ``fn()``: the best of ``repeats`` timed calls after two warm-up calls.

    The minimum, since other load on the machine can only add time to a fixed computation.
    """
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _in_loop(value_and_grad, z, repeats: int) -> float:
    """Seconds per call of ``value_and_grad`` inside one compiled loop (no dispatch), as NUTS runs it."""
    import jax

    def body(i, carry):
        z, total = carry
        u, g = value_and_grad(z)
        return z + 1e-6 * g, total + u.sum()  # each call depends on the last: nothing is hoisted

    loop = jax.jit(lambda z: jax.lax.fori_loop(0, repeats, body, (z, 0.0)))
    jax.block_until_ready(loop(z))  # compile
    return _time_calls(lambda: jax.block_until_ready(loop(z)), 10) / repeats


def gradient_floor(gebm: gp.GEBM, chains: int, repeats: int) -> dict:
    """Seconds per value-and-gradient of U in JAX, batched over the chains (as vectorised NUTS calls it) and
    for one point, inside a compiled loop and as one jitted call from Python; torch's autograd for both."""
    import jax

    jg = gp.to_jax(gebm)
    d = jg.latent_dim
    value_and_grad = jax.value_and_grad(lambda z: jg.latent_potential(z))
    batched = jax.vmap(value_and_grad)
    zb = jax.random.normal(jax.random.PRNGKey(0), (chains, d))
    batched_jit = jax.jit(batched)
    out = {
        "chains": chains,
        "jax_batched": _in_loop(batched, zb, repeats),
        "jax_single": _in_loop(value_and_grad, zb[0], repeats),
        "jax_batched_call": _time_calls(lambda: jax.block_until_ready(batched_jit(zb)), repeats),
    }
    gebm.eval()
    for p in gebm.parameters():
        p.requires_grad_(False)

    def torch_grad(z):
        z = z.clone().requires_grad_(True)
        torch.autograd.grad(gebm.latent_potential(z).sum(), z)

    zt = torch.randn(chains, d)
    out["torch_batched"] = _time_calls(lambda: torch_grad(zt), repeats)
    out["torch_single"] = _time_calls(lambda: torch_grad(zt[:1]), repeats)
    for p in gebm.parameters():
        p.requires_grad_(True)
    return out


