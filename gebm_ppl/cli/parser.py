"""The ``gebm`` command's argument parser (:func:`build_parser`); :func:`gebm_ppl.cli.main` runs it."""

from __future__ import annotations

import argparse
import math

__all__ = ["build_parser"]

BACKENDS = ("pyro", "numpyro")
SPLITS = ("train", "val", "test")  # gebm_ppl.runs.SPLITS, without importing the runs package for --help


# ------------------------------------------------------------------------------------------ parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def _names(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of column names or indices")
    return items


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; help lines end with the default unless it is empty or already stated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if "default" in text or empty or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


_EPILOG_EXIT = "Exit codes: 0 success, 1 runtime failure, 2 bad input or usage, 130 interrupted."


def build_parser() -> argparse.ArgumentParser:
    """The ``gebm`` argument parser (one sub-command per step: fit, evaluate, sample, diagnose)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="gebm",
        description=(
            "Generalized Energy Based Models (Arbel, Zhou & Gretton, ICLR 2021) from the command line:\n"
            "fit a GEBM to a dataset or a data file, evaluate its held-out NLL, sample it in latent space\n"
            "and diagnose the samples. Run 'gebm COMMAND --help' for the options of each command."
        ),
        epilog="Typical use:\n"
        "  gebm fit red-wine --config models/uci/red-wine.toml --out runs/red-wine\n"
        "  gebm evaluate runs/red-wine --split test\n"
        "  gebm sample runs/red-wine -n 1000 --method nuts --chains 4 --out runs/red-wine/samples.h5\n"
        "  gebm diagnose runs/red-wine/samples.nc --plots runs/red-wine/plots\n\n" + _EPILOG_EXIT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gebm_ppl {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback of an error (also: GEBM_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description, epilog=_EPILOG_EXIT,
                           formatter_class=_Formatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the full traceback of an error")
        return p

    def progress_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="show progress bars (default: only when stderr is a terminal)")

    def threads_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=_nonnegative_int, default=1, metavar="N",
                       help="torch CPU threads (default 1, for reproducibility: sums split over threads round "
                            "differently, so the numbers depend on the thread count; with 1 they are the same on "
                            "any machine with the same CPU kind, and those of the UCI benchmark; 0: torch's "
                            "default, one per core, faster for large models)")

    # ---- fit
    fit = command(
        "fit",
        "fit a GEBM: a RealNVP base by maximum likelihood, then the energy by KALE",
        "Fit a GEBM into a run directory: by default a RealNVP base by maximum likelihood (early stopping\n"
        "on the validation NLL), then an MLP energy and the log-partition c by KALE on that base; a\n"
        "configuration may name other registered classes ([base] class = ..., [energy] class = ...), and a\n"
        "base without a density (a generator) is trained with its energy by [adversarial]. The data are a\n"
        "dataset (red-wine, white-wine, parkinsons, digits, mnist, ...) or a CSV / NPY / HDF5 file, which is\n"
        "shuffled, split 80/10/10 (validation at most 1000 rows), dequantised and whitened with the\n"
        "training statistics. Checkpoints are written into RUN_DIR as training goes; running the same\n"
        "command again after an interruption resumes from the last checkpoint.",
    )
    fit.add_argument("data", metavar="DATASET|FILE", nargs="?",
                     help="a dataset name (see gebm_ppl.data.DATASETS) or a .csv/.tsv/.txt, .npy or .h5/.hdf5 "
                          "file (default: the configuration's [data] name)")
    fit.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create or resume")
    fit.add_argument("--config", metavar="TOML",
                     help="configuration file with [data], [base], [energy], [mle], [kale], [adversarial], "
                          "[sample] and [eval] tables (e.g. models/uci/red-wine.toml; [realnvp] is read as [base]); "
                          "default: the library defaults")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one configuration option, value in TOML syntax (repeatable), e.g. "
                          "--set kale.epochs=50 --set energy.hidden=[64,64]")
    fit.add_argument("--seed", type=_nonnegative_int, default=0,
                     help="seed of the data split, the initial weights and training")
    fit.add_argument("--data-dir", metavar="DIR",
                     help="folder holding the dataset's source files (default: $GEBM_DATA_DIR, the user cache, "
                          "then download)")
    fit.add_argument("--key", metavar="NAME", help="HDF5 input: the dataset inside the file holding the table")
    fit.add_argument("--columns", type=_names, metavar="A,B,...",
                     help="file input: the columns to keep, by header name or 1-based index (-1 = the last)")
    fit.add_argument("--drop", type=_names, metavar="A,B,...", help="file input: columns to leave out")
    fit.add_argument("--delimiter", metavar="CHAR", help="CSV input: the field delimiter (default: sniffed)")
    fit.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu); with --nproc, "
                     "cuda puts rank r on cuda:r and the ranks talk over NCCL (gloo on the CPU)")
    fit.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                     help="train data-parallel on N local processes (torch.distributed.run, DistributedDataParallel): "
                          "every step uses the same global minibatch as one process, each rank its share; rank 0 "
                          "writes the run folder")
    fit.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                     help="checkpoint every STEPS optimizer steps (default: after every epoch)")
    fit.add_argument("--overwrite", action="store_true",
                     help="discard a run already in RUN_DIR instead of resuming it")
    threads_option(fit)
    progress_option(fit)

    # ---- evaluate
    ev = command(
        "evaluate",
        "held-out NLL of a fitted run, with standard errors and the KALE bound",
        "Evaluate a fitted run on one split: the base's NLL, the GEBM's importance-sampling NLL\n"
        "-mean(log g(x) - E(x)) + A_hat (A_hat from fresh base samples, with its standard error and\n"
        "effective sample size), the KALE upper bound NLL_base - F(E, c) and the paired difference\n"
        "Delta NLL = GEBM - base (negative: the GEBM is better), with a one-line verdict; in nats per\n"
        "example in the model's whitened space. A GEBM whose base has no density reports A_hat, its ESS\n"
        "and the KALE value instead of NLLs. Writes RUN_DIR/evaluation-SPLIT.json; an earlier one made with\n"
        "another --num-samples or --seed is kept, renamed to evaluation-SPLIT-mM-seedS.json.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'gebm fit'")
    ev.add_argument("--split", choices=SPLITS, default="test", help="which split to evaluate")
    ev.add_argument("--num-samples", type=_positive_int, default=None, metavar="M",
                    help="base samples for the log-partition estimate (default: the run's [eval] num_samples, "
                         "else 100000)")
    ev.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                    help="rows per forward pass (default: the run's [eval] batch_size, else 10000)")
    ev.add_argument("--seed", type=_nonnegative_int, default=None,
                    help="seed of the base samples (default: 10000 + the run's seed, as the UCI benchmark)")
    threads_option(ev)
    ev.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    ev.add_argument("--device", default=None, help="torch device of the evaluation, e.g. cpu or cuda (default: cpu)")

    # ---- sample
    sa = command(
        "sample",
        "sample a fitted GEBM by MCMC in latent space",
        "Draw samples of a fitted GEBM by MCMC on the latent posterior nu(z) ~ N(z; 0, I) exp(-T E(G(z)))\n"
        "(x = G(z) is then a GEBM sample). Writes the draws to an HDF5 file (posterior/z, posterior/x in\n"
        "the whitened space, posterior/x_data in the data's units by column name, sample_stats/*) and the\n"
        "ArviZ InferenceData (the same variables) to netCDF beside it. Settings not given as flags come\n"
        "from the run configuration's [sample] table.\n"
        "--backend numpyro (every method but sir) needs JAX and NumPyro installed.",
    )
    sa.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'gebm fit'")
    sa.add_argument("-n", "--num-samples", type=_positive_int, default=None, metavar="N",
                    help="draws kept per chain (default: the run's [sample] value, else 1000)")
    sa.add_argument("--warmup", type=_nonnegative_int, default=None, metavar="W",
                    help="warm-up (adaptation / burn-in) steps per chain, discarded (default: [sample], else 500)")
    from ..sampling.registry import methods_help, sampler_names  # the sampler registry: choices and help

    sa.add_argument("--method", choices=sampler_names(), default=None,
                    help="default: the run's [sample] method, else nuts. " + methods_help().replace("%", "%%"))
    sa.add_argument("--backend", choices=BACKENDS, default=None,
                    help="pyro (torch) or numpyro (JAX, JIT-compiled, several times faster; every method but "
                         "sir); default: numpyro when JAX and NumPyro are importable and the method has a "
                         "NumPyro kernel, else pyro: gp.sample_latent(backend='auto'), while Python calls default "
                         "to pyro")
    sa.add_argument("--chains", type=_positive_int, default=None, metavar="C",
                    help="number of chains (default: [sample], else 4)")
    sa.add_argument("--chain-method", choices=("vectorized", "parallel", "sequential"), default=None,
                    help="how the chains run: numpyro vectorized (default; one program batched over chains), "
                         "parallel (one JAX device per chain; on CPU with --host-devices) or sequential; pyro "
                         "nuts/hmc sequential (default) or parallel (one process per chain, at most CPUs - 1); "
                         "the other pyro samplers run the chains as one batch (vectorized)")
    sa.add_argument("--host-devices", type=_positive_int, default=None, metavar="N",
                    help="numpyro: ask XLA for N CPU devices (one per parallel chain), before JAX initialises")
    sa.add_argument("--device", default=None,
                    help="where sampling runs: pyro: the torch device of the GEBM (cpu, cuda; default cpu); "
                         "numpyro: cpu or cuda, JAX's backend (default: JAX's default)")
    sa.add_argument("--temperature", type=_positive_float, default=None, metavar="T",
                    help="energy temperature T (1 samples the model itself; default: [sample], else 1)")
    sa.add_argument("--seed", type=_nonnegative_int, default=None, help="sampler seed (default: [sample], else 0)")
    sa.add_argument("--step-size", type=_positive_float, metavar="H",
                    help="step size (initial step size for nuts/hmc; fixed for ula/kinetic)")
    sa.add_argument("--friction", type=_positive_float, metavar="K", help="kinetic only: friction coefficient")
    sa.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="another sampler keyword argument of gebm_ppl.sample_latent, value in TOML syntax "
                         "(repeatable), e.g. --option target_accept_prob=0.9")
    sa.add_argument("--out", metavar="FILE",
                    help="HDF5 file of samples (.h5 or .hdf5; default RUN_DIR/samples.h5)")
    sa.add_argument("--netcdf", metavar="FILE",
                    help="netCDF file of the InferenceData (default: --out with suffix .nc)")
    progress_option(sa)

    # ---- diagnose
    di = command(
        "diagnose",
        "summary table and plots of MCMC samples",
        "Print the MCMC summary (mean, sd, R-hat, bulk and tail ESS, E-BFMI and divergences for\n"
        "NUTS/HMC) of a 'gebm sample' output, ending with a verdict line (R-hat > 1.01, ESS < 400,\n"
        "divergences, E-BFMI < 0.3 warn) and, with --plots, save trace, rank and pair plots as PNG\n"
        "(the pair plot shows the samples against the run's held-out data; image data: a grid of draws).",
    )
    di.add_argument("file", metavar="FILE", help="the netCDF (.nc) or HDF5 (.h5) output of 'gebm sample'")
    di.add_argument("--plots", metavar="DIR", help="folder for the PNG plots (default: no plots)")
    di.add_argument("--var", choices=("x", "z"), default=None,
                    help="variable to summarise and plot: x (data space: tables in the data's units by column name "
                         "and in the model's whitened coordinates) or z (latent space, with the potential lp = "
                         "-U(z)); default: z for generator bases (latent dim < data dim, e.g. images), else x")
    di.add_argument("--run-dir", metavar="RUN_DIR",
                    help="run directory whose held-out data the pair plot shows (default: the one recorded in "
                         "FILE)")
    di.add_argument("--split", choices=SPLITS, default="test", help="held-out split of the pair plot")
    di.add_argument("--max-dims", type=_positive_int, default=4, metavar="K",
                    help="dimensions shown in the trace, rank and pair plots")
    di.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    return parser
