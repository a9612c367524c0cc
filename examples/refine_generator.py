"""Refine a pretrained generator with an energy, then sample: the post-hoc use of a GEBM.

Any generator G: R^d → R^D (here a GAN trained on the 8×8 digits with ``gp.fit_adversarial(objective="gan")``;
in practice one you already have, wrapped as a gebm_ppl base) stays frozen. An energy E is trained on it by
KALE (``gp.refine_energy``); at the optimum exp(−E) ∝ dP/dG, so the GEBM dQ ∝ exp(−E) dG corrects the
generator's law. Its samples come from Langevin dynamics in the latent space, on
ν(z) ∝ N(z; 0, I) exp(−E(G(z))), mapped by G. The Fréchet distance (offline classifier features) of the
generator's and the refined model's samples to the test images is printed, with the spread between two
independent generator draws (the noise level of an FD difference).

    python examples/refine_generator.py            # about a minute on 2 CPU cores
    python examples/refine_generator.py --quick    # tiny settings, seconds (also: GEBM_QUICK=1)
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

import gebm_ppl as gp


def pretrained_generator(data, steps: int, seed: int = 0) -> gp.MLPGenerator:
    """A stand-in for a generator trained elsewhere: the generator of a logistic GAN."""
    torch.manual_seed(seed)
    dim = int(np.prod(data.image_shape))
    gan = gp.GEBM(gp.MLPGenerator(4, dim, hidden=(32,), image_shape=data.image_shape),
                  gp.EnergyMLP(dim, hidden=(64, 64), floor=-10.0))
    gp.fit_adversarial(gan, data.train, data.val, objective="gan", steps=steps, lr=1e-3, burst_steps=50,
                       eval_every=steps, log_partition_samples=1000, seed=seed, progress=False)
    return gan.base


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("GEBM_QUICK") == "1")
    args = parser.parse_args(argv)
    gan_steps, epochs, chains, steps = (60, 1, 200, 50) if args.quick else (600, 20, 1000, 300)
    torch.set_num_threads(1)

    data = gp.data.load("digits", seed=0)
    classifier = gp.metrics.load_classifier(data)
    generator = pretrained_generator(data, gan_steps)

    # 1. an energy trained by KALE on the frozen generator (any generator base works here)
    torch.manual_seed(1)
    energy = gp.EnergyMLP(generator.dim, hidden=(64, 64), floor=-10.0)
    gebm, history = gp.refine_energy(generator, data.train, data.val, energy=energy, epochs=epochs, noise_factor=5,
                                     energy_lr=1e-3, penalty=1.0, log_partition_samples=2000, progress=False)
    print(f"refined: {history.total_steps} energy steps, validation KALE {history.best_value:.3f}")

    # 2. samples of the refined model: latent ULA at T = 1, one image per chain
    idata = gp.sample_latent(gebm, "ula", num_samples=1, warmup_steps=steps - 1, num_chains=chains, step_size=0.01,
                             seed=2, progress=False)
    refined = np.asarray(idata.posterior["x"].values, dtype=np.float32).reshape(chains, -1)
    with torch.no_grad():
        draws = [generator.sample(chains, generator=torch.Generator().manual_seed(s)).numpy() for s in (3, 4)]

    fd = [gp.metrics.sample_quality(x, data, classifier)["fd"] for x in (*draws, refined)]
    print(f"FD to test: generator {fd[0]:.2f} (second draw {fd[1]:.2f}, spread {abs(fd[0] - fd[1]):.2f}), "
          f"refined (latent ULA) {fd[2]:.2f}")


if __name__ == "__main__":
    main()
