"""Impute missing wine measurements with a GEBM prior inside a Pyro model, NUTS in latent space.

A GEBM (RealNVP base by maximum likelihood, energy by KALE) is trained on the red-wine training split.
For a few held-out wines, three measurements are observed with a small measurement noise and the
other eight are inferred. The model, for wines i = 1..K in a plate, is

    x_i ~ GEBM                                    (whitened coordinates, 11-D)
    obs_i ~ N(unwhiten(x_i)[observed], σ²)         (original units)

and :class:`gebm_ppl.GEBMReparam` rewrites each x_i into z_i ~ N(0, I), a factor −E(G(z_i)) and
x_i = G(z_i), so that Pyro's NUTS runs in the flow's latent space. The posterior means are checked
against self-normalised importance weighting on the same model, and the imputations are compared
with the true values and with the training mean.

    python examples/pyro_prior_imputation.py              # about a minute on 2 CPU cores
    python examples/pyro_prior_imputation.py --quick      # tiny settings, seconds (also: GEBM_QUICK=1)

The red-wine files are looked up in --data-dir, $GEBM_DATA_DIR, the user cache, then downloaded from UCI.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size

import gebm_ppl as gp

OBSERVED = ("alcohol", "pH", "volatile acidity")


def unwhiten(x: torch.Tensor, mean: torch.Tensor, matrix_inv: torch.Tensor) -> torch.Tensor:
    """Original units from whitened coordinates ``[..., D]`` (the data were whitened as (x − mean) @ matrix)."""
    return x @ matrix_inv + mean


def imputation_model(gebm, observed_idx, mean, matrix_inv, noise, obs):
    """K wines ``obs [K, len(observed_idx)]``: x_i ~ GEBM, obs_i ~ N(unwhiten(x_i)[observed], noise²)."""
    with pyro.plate("wines", obs.shape[0]):
        x = pyro.sample("x", gebm.distribution())
        x_orig = unwhiten(x, mean, matrix_inv)
        pyro.sample("obs", dist.Normal(x_orig[..., observed_idx], noise).to_event(1), obs=obs)
    return x


@torch.no_grad()
def importance_posterior(gebm, observed_idx, mean, matrix_inv, noise, obs, num_samples, seed):
    """Posterior means ``[K, D]`` (original units) by self-normalised importance weighting with η = N(0, I).

    One set of prior latents serves every wine: weights w_ik ∝ exp(−E(G z_k)) · N(obs_i; unwhiten(G z_k)[obs], σ²).
    Also returns the weights' effective sample sizes ``[K]``.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, gebm.latent_dim, generator=g)
    x_orig = unwhiten(gebm.base(z), mean, matrix_inv)
    log_prior = -gebm.energy(gebm.base(z))
    log_lik = dist.Normal(x_orig[:, observed_idx], noise).log_prob(obs[:, None, :]).sum(-1)  # [K, M]
    w = torch.softmax((log_prior + log_lik).double(), -1)
    return (w.float() @ x_orig), 1.0 / (w**2).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings (for tests); also GEBM_QUICK=1")
    parser.add_argument("--data-dir", default=None, help="folder with the red-wine source files")
    parser.add_argument("--wines", type=int, default=4, help="number of held-out wines to impute")
    parser.add_argument("--draws", type=int, default=100, help="NUTS draws per chain (and as many warmup steps)")
    parser.add_argument("--chains", type=int, default=1, help="NUTS chains, run one after another")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("GEBM_QUICK", "") not in ("", "0")
    # small networks: one torch thread is fastest, and far faster on a busy machine (the README's "Threads and
    # progress"; measured under load: NUTS 287 s with 2 threads, 9 s with 1). fit_* choose it themselves; the
    # NUTS run below is this script's own Pyro model, so the script chooses.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()

    data = gp.data.load("red-wine", data_dir=args.data_dir, seed=0)
    prep = data.metadata["preprocessing"]
    columns = list(prep["columns"])
    mean = torch.as_tensor(np.asarray(prep["whitening"]["mean"]), dtype=torch.float32)
    matrix = torch.as_tensor(np.asarray(prep["whitening"]["matrix"]), dtype=torch.float64)
    matrix_inv = torch.linalg.inv(matrix).float()
    observed_idx = [columns.index(c) for c in OBSERVED]
    hidden_idx = [i for i in range(len(columns)) if i not in observed_idx]
    print(data)

    # 1. the prior: RealNVP by maximum likelihood, then an energy (and c) by KALE on the frozen base
    epochs_mle, epochs_kale = (3, 1) if quick else (40, 30)
    base = gp.RealNVP(data.dim, hidden_features=64, num_layers=4, num_hidden_layers=1, scale_bound=1.0)
    gp.fit_mle(base, data.train, data.val, epochs=epochs_mle, batch_size=100, lr=1e-3, patience=10)
    gebm = gp.GEBM(base, gp.EnergyMLP(data.dim, hidden=(64, 64), spectral_norm="output"))
    kale = gp.fit_kale(
        gebm, data.train, data.val, epochs=epochs_kale, noise_factor=5, penalty=0.1, log_partition_samples=5000
    )
    print(kale)
    print(f"validation NLL (nats): base {kale.last['base_val_nll']:.3f}, GEBM {kale.last['val_nll']:.3f}")
    gebm.eval()
    for p in gebm.parameters():  # the prior is fixed: no gradients for its weights during NUTS
        p.requires_grad_(False)
    print(f"training: {time.perf_counter() - start:.0f} s")

    # 2. K held-out wines, three columns observed with noise 10 % of each column's spread
    test = unwhiten(torch.as_tensor(data.test), mean, matrix_inv)
    truth = test[: args.wines]
    noise = 0.1 * test.std(0)[observed_idx]
    g = torch.Generator().manual_seed(1)
    obs = truth[:, observed_idx] + noise * torch.randn(args.wines, len(observed_idx), generator=g)

    # 3. NUTS on the reparameterised model: one latent z_i per wine, sampled jointly (the plate batches them)
    t0 = time.perf_counter()
    reparam_model = poutine.reparam(imputation_model, config={"x": gp.GEBMReparam()})
    draws, warmup = (20, 20) if quick else (args.draws, args.draws)
    chains = []
    for chain in range(args.chains):
        pyro.set_rng_seed(chain)
        mcmc = MCMC(NUTS(reparam_model, max_tree_depth=5), num_samples=draws, warmup_steps=warmup,
                    disable_progbar=True)
        mcmc.run(gebm, observed_idx, mean, matrix_inv, noise, obs)
        chains.append(mcmc.get_samples()["x_latent"])  # [draws, K, d]
    z = torch.stack(chains)  # [chains, draws, K, d]
    x_orig = unwhiten(gebm.base(z), mean, matrix_inv)
    ess = effective_sample_size(x_orig, chain_dim=0, sample_dim=1)  # [K, D]
    post_mean, post_sd = x_orig.mean((0, 1)), x_orig.std((0, 1))
    print(f"NUTS: {args.chains} chain(s) × {draws} draws in {time.perf_counter() - t0:.0f} s")

    # 4. the same posterior by importance weighting, for comparison
    iw_mean, iw_ess = importance_posterior(
        gebm, observed_idx, mean, matrix_inv, noise, obs, 20_000 if quick else 200_000, seed=2
    )
    marginal = unwhiten(torch.as_tensor(data.train), mean, matrix_inv).mean(0)
    scale = test.std(0)
    for k in range(args.wines):
        shown = ", ".join(f"{columns[i]} = {float(v):.3g}" for i, v in zip(observed_idx, obs[k], strict=True))
        print(f"\nwine {k}: observed {shown}")
        print(f"{'column':>22} {'truth':>8} {'NUTS mean ± sd':>17} {'ESS':>5} {'IW mean':>8} {'train mean':>10}")
        for i in hidden_idx:
            m, sd = float(post_mean[k, i]), float(post_sd[k, i])
            print(
                f"{columns[i]:>22} {float(truth[k, i]):8.3g} {m:8.3g} ± {sd:<6.2g} {float(ess[k, i]):5.0f}"
                f" {float(iw_mean[k, i]):8.3g} {float(marginal[i]):10.3g}"
            )
        print(f"(importance weighting: weight ESS {float(iw_ess[k]):.0f})")

    err = ((post_mean - truth)[:, hidden_idx] / scale[hidden_idx]).abs().mean()
    err_iw = ((iw_mean - truth)[:, hidden_idx] / scale[hidden_idx]).abs().mean()
    err_marginal = ((marginal - truth)[:, hidden_idx] / scale[hidden_idx]).abs().mean()
    gap = ((post_mean - iw_mean)[:, hidden_idx] / post_sd[:, hidden_idx]).abs().max()
    print(
        f"\nmean absolute error of the {len(hidden_idx)} imputed columns over {args.wines} wines, in test sds: "
        f"NUTS {err:.3f}, importance weighting {err_iw:.3f}, training mean {err_marginal:.3f}"
    )
    print(f"largest NUTS − IW gap of a posterior mean: {gap:.2f} posterior sds")
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
