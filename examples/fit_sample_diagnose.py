"""Fit a GEBM on red-wine, sample it with NUTS in latent space and diagnose the chains.

    python examples/fit_sample_diagnose.py            # a few minutes on 2 CPU cores
    python examples/fit_sample_diagnose.py --quick    # tiny settings, seconds (also: GEBM_QUICK=1)

The red-wine files are looked up in $GEBM_DATA_DIR, the user cache, then downloaded from UCI.
Plots go to --out (default results/examples/fit_sample_diagnose under the current folder).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import gebm_ppl as gp
from gebm_ppl.evaluation import evaluate_gebm
from gebm_ppl.units import verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings (for tests); also GEBM_QUICK=1")
    parser.add_argument("--out", type=Path, default=Path("results/examples/fit_sample_diagnose"))
    args = parser.parse_args()
    quick = args.quick or os.environ.get("GEBM_QUICK", "") not in ("", "0")
    torch.manual_seed(0)
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    # --8<-- [start:data]
    data = gp.data.load("red-wine", seed=0)  # kexpfam splits, whitened with train statistics, float32
    print(data)
    # --8<-- [end:data]

    epochs_mle, epochs_kale = (3, 2) if quick else (300, 40)
    noise_factor = 2 if quick else 20
    num_samples, warmup, chains = (25, 25, 2) if quick else (500, 500, 4)

    # --8<-- [start:fit]
    # 1. the base: a RealNVP flow trained by maximum likelihood (early stopping on validation NLL)
    base = gp.RealNVP(data.dim, hidden_features=100, num_layers=5, num_hidden_layers=1, scale_bound=1.0)
    mle = gp.fit_mle(base, data.train, data.val, epochs=epochs_mle, batch_size=100, lr=1e-3, patience=20)

    # 2. the energy (and the log-partition c) by KALE on the frozen base
    gebm = gp.GEBM(base, gp.EnergyMLP(data.dim, hidden=(100, 200, 100), spectral_norm="output"))
    kale = gp.fit_kale(gebm, data.train, data.val, epochs=epochs_kale, noise_factor=noise_factor, penalty=0.1)
    print(mle)
    print(kale)

    # 3. held-out NLL: exact for the base, importance sampling (and the KALE bound) for the GEBM
    ev = evaluate_gebm(gebm, data.test, num_samples=10_000 if quick else 100_000)
    print(f"test NLL: base {ev.base_nll:.3f} ± {ev.base_nll_stderr:.3f}, GEBM {ev.nll:.3f} ± {ev.nll_stderr:.3f}, "
          f"KALE bound {ev.nll_bound:.3f}; Δ NLL = GEBM − base {ev.delta_nll:.3f} ± {ev.delta_nll_stderr:.3f}")
    print(verdict(ev.nll_per_example - ev.base_nll_per_example, extra_stderr=ev.log_partition_stderr))
    # --8<-- [end:fit]

    # --8<-- [start:sample]
    # 4. NUTS on the latent posterior ν(z) ∝ N(z; 0, I) exp(−E(G(z))); x = G(z) are GEBM samples
    idata = gp.sample_latent(gebm, method="nuts", num_samples=num_samples, warmup_steps=warmup,
                             num_chains=chains, seed=0)
    print(idata.posterior["x"].shape)  # (chain, draw, 11)
    # --8<-- [end:sample]

    # --8<-- [start:diagnose]
    # 5. diagnostics: R-hat, bulk/tail ESS, E-BFMI, divergences; trace, rank and pair plots
    print(gp.diagnostics.report(idata, "x"))
    gp.diagnostics.plot_trace(idata, args.out / "trace.png", max_dims=4)
    gp.diagnostics.plot_rank(idata, args.out / "rank.png", max_dims=4)
    gp.diagnostics.plot_pair(idata, data.test, args.out / "pair.png", max_dims=4)
    # --8<-- [end:diagnose]
    print(f"plots in {args.out}")


if __name__ == "__main__":
    main()
