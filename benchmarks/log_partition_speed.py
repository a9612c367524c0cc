"""Time gp.estimate_log_partition on an 11-D RealNVP (5 couplings, width 128) with an EnergyMLP.

    python benchmarks/log_partition_speed.py [--samples 100000 1000000] [--batch-size 10000] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import gebm_ppl as gp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gebm = gp.GEBM(gp.RealNVP(args.dim, hidden_features=128, num_layers=5), gp.EnergyMLP(args.dim))
    gp.estimate_log_partition(gebm, num_samples=args.batch_size, batch_size=args.batch_size)  # warm-up
    print(f"machine: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}")
    print(f"| samples | batch | time (s, best of {args.repeats}) | estimate | stderr | ESS |")
    print("|---|---|---|---|---|---|")
    for n in args.samples:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            est = gp.estimate_log_partition(gebm, num_samples=n, batch_size=args.batch_size)
            best = min(best, time.perf_counter() - t0)
        print(f"| {n} | {args.batch_size} | {best:.2f} | {est.estimate:.5f} | {est.stderr:.2e} | {est.ess:.0f} |")


if __name__ == "__main__":
    main()
