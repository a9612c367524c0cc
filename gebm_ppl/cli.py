"""The ``gebm`` command: fit, evaluate, sample and diagnose GEBMs without writing Python.

This module only parses arguments, calls the library (:mod:`gebm_ppl.runs`,
:mod:`gebm_ppl.diagnostics`) and prints. Exit codes: 0 success, 1 runtime failure (for example a
diverged training run), 2 bad input or usage (unknown dataset, unreadable file, inconsistent
options), 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BACKENDS = ("pyro", "numpyro")
SPLITS = ("train", "val", "test")
SAMPLE_SUFFIXES = (".h5", ".hdf5")


class UsageError(Exception):
    """Bad input or inconsistent options: exit code 2."""


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
    from . import __version__

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

    # ---- fit
    fit = command(
        "fit",
        "fit a GEBM: a RealNVP base by maximum likelihood, then the energy by KALE",
        "Fit a GEBM into a run directory: a RealNVP base by maximum likelihood (early stopping on the\n"
        "validation NLL), then an MLP energy and the log-partition c by KALE on that base. The data are\n"
        "a benchmark dataset (red-wine, white-wine, parkinsons, ...) or a CSV / NPY / HDF5 file, which is\n"
        "shuffled, split 80/10/10 (validation at most 1000 rows), dequantised and whitened with the\n"
        "training statistics. Checkpoints are written into RUN_DIR as training goes; running the same\n"
        "command again after an interruption resumes from the last checkpoint.",
    )
    fit.add_argument("data", metavar="DATASET|FILE",
                     help="a benchmark dataset name (see gebm_ppl.data.DATASETS) or a .csv/.tsv/.txt, .npy or "
                          ".h5/.hdf5 file")
    fit.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create or resume")
    fit.add_argument("--config", metavar="TOML",
                     help="configuration file with [realnvp], [energy], [mle] and [kale] tables (e.g. "
                          "models/uci/red-wine.toml); default: the library defaults")
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
                     help="file input: the columns to keep, by header name or 0-based index")
    fit.add_argument("--drop", type=_names, metavar="A,B,...", help="file input: columns to leave out")
    fit.add_argument("--delimiter", metavar="CHAR", help="CSV input: the field delimiter (default: sniffed)")
    fit.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    fit.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                     help="checkpoint every STEPS optimizer steps (default: after every epoch)")
    fit.add_argument("--overwrite", action="store_true",
                     help="discard a run already in RUN_DIR instead of resuming it")
    progress_option(fit)

    # ---- evaluate
    ev = command(
        "evaluate",
        "held-out NLL of a fitted run, with standard errors and the KALE bound",
        "Evaluate a fitted run on one split: the base's NLL, the GEBM's importance-sampling NLL\n"
        "-mean(log g(x) - E(x)) + A_hat (A_hat from fresh base samples, with its standard error and\n"
        "effective sample size), the KALE upper bound NLL_base - F(E, c) and the gain over the base,\n"
        "in nats per example in the model's whitened space. Writes RUN_DIR/evaluation-SPLIT.json.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'gebm fit'")
    ev.add_argument("--split", choices=SPLITS, default="test", help="which split to evaluate")
    ev.add_argument("--num-samples", type=_positive_int, default=100_000, metavar="M",
                    help="base samples for the log-partition estimate")
    ev.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the base samples")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")

    # ---- sample
    sa = command(
        "sample",
        "sample a fitted GEBM by MCMC in latent space",
        "Draw samples of a fitted GEBM by MCMC on the latent posterior nu(z) ~ N(z; 0, I) exp(-T E(G(z)))\n"
        "(x = G(z) is then a GEBM sample). Writes the draws to an HDF5 file (posterior/z, posterior/x in\n"
        "the whitened space, x_original in the data's units, sample_stats/*) and the ArviZ InferenceData\n"
        "to netCDF beside it. --backend numpyro (every method but sir) needs JAX and NumPyro installed.",
    )
    sa.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'gebm fit'")
    sa.add_argument("-n", "--num-samples", type=_positive_int, default=1000, metavar="N",
                    help="draws kept per chain")
    sa.add_argument("--warmup", type=_nonnegative_int, default=500, metavar="W",
                    help="warm-up (adaptation / burn-in) steps per chain, discarded")
    from .sampling.registry import methods_help, sampler_names  # the sampler registry: choices and help

    sa.add_argument("--method", choices=sampler_names(), default="nuts", help=methods_help().replace("%", "%%"))
    sa.add_argument("--backend", choices=BACKENDS, default="pyro",
                    help="pyro (torch) or numpyro (JAX, JIT-compiled; every method but sir)")
    sa.add_argument("--chains", type=_positive_int, default=4, metavar="C", help="number of chains")
    sa.add_argument("--temperature", type=_positive_float, default=1.0, metavar="T",
                    help="energy temperature T (1 samples the model itself)")
    sa.add_argument("--seed", type=_nonnegative_int, default=0, help="sampler seed")
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
        "NUTS/HMC) of a 'gebm sample' output and, with --plots, save trace, rank and pair plots as PNG\n"
        "(the pair plot shows the samples against the run's held-out data).",
    )
    di.add_argument("file", metavar="FILE", help="the netCDF (.nc) or HDF5 (.h5) output of 'gebm sample'")
    di.add_argument("--plots", metavar="DIR", help="folder for the PNG plots (default: no plots)")
    di.add_argument("--var", choices=("x", "z"), default="x",
                    help="variable to summarise and plot: x (data space) or z (latent space)")
    di.add_argument("--run-dir", metavar="RUN_DIR",
                    help="run directory whose held-out data the pair plot shows (default: the one recorded in "
                         "FILE)")
    di.add_argument("--split", choices=SPLITS, default="test", help="held-out split of the pair plot")
    di.add_argument("--max-dims", type=_positive_int, default=4, metavar="K",
                    help="dimensions shown in the trace, rank and pair plots")
    di.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    return parser


# ------------------------------------------------------------------------------------------ helpers
def _parse_options(items: Sequence[str]) -> dict:
    from .runs import _parse_value

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--option {item!r} should read KEY=VALUE, e.g. target_accept_prob=0.9.")
        out[key.strip()] = _parse_value(text.strip())
    return out


def _check_numpyro() -> None:
    try:
        import jax  # noqa: F401
        import numpyro  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"--backend numpyro needs JAX and NumPyro, which cannot be imported here ({e}); install them with "
            "pip install 'gebm_ppl[jax]', or use --backend pyro."
        ) from None


def _fmt(value: float | None, stderr: float | None = None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if stderr is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {stderr:.{digits}f}"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


# ------------------------------------------------------------------------------------------ commands
def _prepare_fit(args):
    from . import runs

    config = runs.load_config(args.config)
    config = runs.apply_overrides(config, args.overrides)
    data = runs.load_data(args.data, args.seed, data_dir=args.data_dir, key=args.key, delimiter=args.delimiter,
                          columns=args.columns, drop=args.drop)
    if args.device is not None:
        import torch

        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            raise UsageError(f"--device {args.device!r} is not a torch device: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder.")
    return config, data


def _run_fit(args, prepared) -> int:
    from . import runs

    config, data = prepared
    log = (lambda msg: print(f"gebm fit: {msg}", file=sys.stderr, flush=True))  # noqa: E731
    log(f"data {data!r}")
    try:
        run = runs.fit_run(args.out, data, config, seed=args.seed, device=args.device, progress=args.progress,
                           checkpoint_every=args.checkpoint_every, overwrite=args.overwrite, log=log)
    except runs.RunMismatch as e:
        raise UsageError(str(e)) from None
    s = run.info.get("summary", {})
    mle, kale = s.get("mle", {}), s.get("kale", {})
    monitor_label = {"val_nll": "NLL", "kale_val": "KALE value"}
    print(f"Fitted a GEBM on {data.metadata.get('name')} ({data.dim} dims) into {run.path}")
    print(_table([
        ("base (RealNVP, MLE) validation NLL", _fmt(mle.get("best_val_nll"))),
        (f"GEBM (KALE) validation {monitor_label.get(kale.get('monitor'), 'value')}", _fmt(kale.get("best_val_nll"))),
        ("MLE epochs / wall time", f"{mle.get('epochs')} / {_fmt(mle.get('wall_time'), digits=1)} s"),
        ("KALE epochs / wall time", f"{kale.get('epochs')} / {_fmt(kale.get('wall_time'), digits=1)} s"),
        ("model", str(run.path / runs.GEBM_FILE)),
    ]))
    print(f"Next: gebm evaluate {run.path}")
    return EXIT_OK


def _prepare_run(args):
    from . import runs

    return runs.load_run(args.run_dir)


def _run_evaluate(args, run) -> int:
    import json

    from . import runs

    res = runs.evaluate_run(run, args.split, num_samples=args.num_samples, seed=args.seed)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    print(f"{res['dataset']}, {args.split} split ({res['num_examples']} examples): NLL in {res['nll_units']}")
    print(_table([
        ("base (RealNVP) NLL", _fmt(res["base_nll"], res["base_nll_stderr"])),
        ("GEBM NLL (importance sampling)", _fmt(res["nll"], res["nll_stderr"])),
        ("GEBM NLL, KALE upper bound", _fmt(res["nll_bound"], res["nll_bound_stderr"])),
        ("gain over the base (paired)", _fmt(res["gain"], res["gain_stderr"])),
        ("KALE F(E, c)", _fmt(res["kale"])),
        ("log-partition A_hat (c)", f"{_fmt(res['log_partition'], res['log_partition_stderr'], 4)} "
                                    f"(c = {_fmt(res['c'], digits=4)})"),
        ("effective sample size", f"{res['ess']:.0f} of {res['num_samples']} base samples"),
    ]))
    print(f"Wrote {Path(args.run_dir) / ('evaluation-' + args.split + '.json')}")
    return EXIT_OK


def _takes_step_size(method: str) -> bool:
    from .sampling.registry import get_sampler

    spec = get_sampler(method)
    return spec.passthrough is not None or "step_size" in spec.defaults


def _prepare_sample(args):
    from . import runs

    if args.backend == "numpyro":
        from .sampling.registry import sampler_names

        if args.method not in sampler_names("numpyro"):
            methods = ", ".join(sampler_names("numpyro"))
            raise UsageError(f"--backend numpyro supports --method {methods}, not {args.method!r}.")
        _check_numpyro()
    if args.friction is not None and args.method != "kinetic":
        raise UsageError(f"--friction applies to --method kinetic, not {args.method!r}.")
    if args.step_size is not None and not _takes_step_size(args.method):
        raise UsageError(f"--step-size does not apply to --method {args.method!r} (it takes no steps).")
    kwargs = _parse_options(args.options)
    for name in ("step_size", "friction"):
        if getattr(args, name) is not None:
            if name in kwargs:
                raise UsageError(f"{name} is given both as --{name.replace('_', '-')} and as --option.")
            kwargs[name] = getattr(args, name)
    if args.out is not None and Path(args.out).suffix.lower() not in SAMPLE_SUFFIXES:
        raise UsageError(f"--out should be an HDF5 file ending in {' or '.join(SAMPLE_SUFFIXES)}. Got {args.out!r}.")
    if args.netcdf is not None and Path(args.netcdf).suffix.lower() != ".nc":
        raise UsageError(f"--netcdf should end in .nc. Got {args.netcdf!r}.")
    run = runs.load_run(args.run_dir)
    return run, kwargs


def _run_sample(args, prepared) -> int:
    from . import runs

    run, kwargs = prepared
    try:
        files = runs.sample_run(run, args.out, netcdf=args.netcdf, method=args.method, backend=args.backend,
                                num_samples=args.num_samples, warmup_steps=args.warmup, num_chains=args.chains,
                                temperature=args.temperature, seed=args.seed,
                                progress=sys.stderr.isatty() if args.progress is None else args.progress,
                                **kwargs)
    except TypeError as e:
        if "keyword argument" in str(e):  # an --option the sampler does not take
            raise UsageError(f"--option: {e}") from None
        raise
    post = files.idata.posterior
    attrs = post.attrs
    print(f"Drew {post.sizes['chain']} x {post.sizes['draw']} samples with {args.method} ({args.backend}) "
          f"in {_fmt(attrs.get('sampling_time'), digits=1)} s")
    print(f"Wrote {files.hdf5}")
    print(f"Wrote {files.netcdf}")
    print(f"Next: gebm diagnose {files.netcdf} --plots {Path(files.netcdf).parent / 'plots'}")
    return EXIT_OK


def _prepare_diagnose(args):
    from . import runs

    idata = runs.read_samples(args.file)
    if args.var not in idata.posterior:
        raise UsageError(f"{args.file!r} has no posterior variable {args.var!r} (it has {list(idata.posterior)}).")
    reference = None
    run_dir = args.run_dir or idata.posterior.attrs.get("run_dir") or None
    if run_dir and args.plots and args.var == "x":
        try:
            reference = getattr(runs.load_run(run_dir).data, args.split)
        except (FileNotFoundError, ValueError) as e:
            if args.run_dir:  # asked for explicitly: an error
                raise
            print(f"gebm diagnose: no held-out data for the pair plot ({e})", file=sys.stderr)
    if args.plots:
        plots = Path(args.plots)
        if plots.exists() and not plots.is_dir():
            raise UsageError(f"--plots {str(plots)!r} exists and is not a folder.")
    return idata, reference


def _run_diagnose(args, prepared) -> int:
    import json

    from . import diagnostics

    idata, reference = prepared
    names = [args.var]
    if args.json:
        tables = {
            "run": diagnostics.run_summary(idata, names),
            "chains": json.loads(diagnostics.chain_summary(idata).to_json(orient="index")),
            "summary": json.loads(diagnostics.summary(idata, names).to_json(orient="index")),
        }
        print(json.dumps(tables, indent=2))
    else:
        print(diagnostics.report(idata, names))
    if args.plots:
        plots = Path(args.plots)
        written = [
            diagnostics.plot_trace(idata, plots / f"trace_{args.var}.png", var_name=args.var, max_dims=args.max_dims),
            diagnostics.plot_rank(idata, plots / f"rank_{args.var}.png", var_name=args.var, max_dims=args.max_dims),
        ]
        if reference is not None:
            written.append(diagnostics.plot_pair(idata, reference, plots / "pair_x.png", max_dims=args.max_dims))
        for path in written:
            print(f"Wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


_COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "fit": (_prepare_fit, _run_fit),
    "evaluate": (_prepare_run, _run_evaluate),
    "sample": (_prepare_sample, _run_sample),
    "diagnose": (_prepare_diagnose, _run_diagnose),
}

# Errors that mean "bad input" while the inputs are being read and checked.
_INPUT_ERRORS = (UsageError, ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError,
                 PermissionError, IsADirectoryError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gebm`` command with ``argv`` (default ``sys.argv[1:]``) and return its exit code.

    The console script calls ``sys.exit(main())``; tests call ``main([...])`` directly.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    debug = getattr(args, "debug", False) or os.environ.get("GEBM_DEBUG", "") not in ("", "0")
    prog = f"gebm {args.command}"
    prepare, run = _COMMANDS[args.command]

    def report(kind: str, err: BaseException) -> None:
        if debug:
            traceback.print_exception(err)
        print(f"{prog}: {kind}: {err}", file=sys.stderr)

    try:
        prepared = prepare(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _INPUT_ERRORS as e:
        report("error", e)
        return EXIT_USAGE
    try:
        return run(args, prepared)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as e:
        report("error", e)
        return EXIT_USAGE
    except Exception as e:  # a runtime failure: training diverged, a sampler failed, a disk filled up, ...
        report("failed", e)
        return EXIT_FAILURE
