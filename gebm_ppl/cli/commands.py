"""The ``gebm`` commands (fit, evaluate, sample, diagnose): each a ``prepare`` (read and check the inputs: errors
are exit 2) and a ``run`` (do the work: errors are exit 1), called by :func:`gebm_ppl.cli.main`."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SAMPLE_SUFFIXES = (".h5", ".hdf5")


class UsageError(Exception):
    """Bad input or inconsistent options: exit code 2."""


# ------------------------------------------------------------------------------------------ helpers
def _parse_options(items: Sequence[str]) -> dict:
    from ..runs import parse_value

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--option {item!r} should read KEY=VALUE, e.g. target_accept_prob=0.9.")
        out[key.strip()] = parse_value(text.strip())
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


def _wrote(paths: Sequence[Path], file=None) -> None:
    for path in paths:
        print(f"Wrote {path}", file=file or sys.stdout)


def _threads(n: int):
    """``torch.set_num_threads(n)`` for the block (0: leave torch's count), restored after; either way an explicit
    choice that the library's automatic one (:mod:`gebm_ppl._threads`) honours."""
    from .._threads import torch_threads

    return torch_threads(n)


def _torch_device(text: str):
    """``torch.device(text)``, or UsageError when it is not a device or CUDA is asked for and absent."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise UsageError(f"--device {text!r} is not a torch device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here.")
    return device


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (the ranks know they are ranks; and torch.distributed.run's
    own parser would take ``--nproc`` for an abbreviation of its ``--nproc-per-node``)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


# ------------------------------------------------------------------------------------------ fit
def _describe_data(data) -> str:
    """The data in words: ``user data file wine.csv: 11 columns (alcohol, ...), 1296 / 144 / 159 rows (train /
    validation / test), whitened, split seed 0`` (a dataset: its name and protocol)."""
    from .. import units

    m = getattr(data, "metadata", None) or {}
    sizes = [len(part) for part in (data.train, data.val, data.test)]
    what = m.get("description") if m.get("protocol") == "user" else f"{m.get('name')} ({m.get('protocol')} protocol)"
    try:
        names = units.column_names(m)
        shown = ", ".join(str(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
        columns, space = f"{data.dim} columns ({shown})", "whitened"
    except (ValueError, KeyError, TypeError):  # not whitened (images, ...)
        columns, space = f"{data.dim} dims", "not whitened"
    return (f"{what}: {columns}, {sizes[0]} / {sizes[1]} / {sizes[2]} rows (train / validation / test), {space}, "
            f"split seed {m.get('seed')}")


def _nll_space(metadata: dict) -> str:
    """Where the NLLs of a run are measured: the whitened space (with the shift to the data's units) or the data's."""
    from .. import units

    try:
        shift = units.log_abs_det(metadata)
    except ValueError:  # not whitened
        return "in the data's own units"
    return (f"in the model's whitened space (in the data's own units: NLL - {shift:.3f}, the log|det W| of the "
            "whitening; 'gebm evaluate' reports both)")


def _prepare_fit(args):
    from .. import runs

    config = runs.load_config(args.config)
    config = runs.apply_overrides(config, args.overrides)
    source = args.data or config["data"].get("name")
    if not source:
        raise UsageError("give the data: a dataset name or a file, or a configuration with [data] name = ...")
    data = runs.load_data(source, args.seed, data_dir=args.data_dir, key=args.key, delimiter=args.delimiter,
                          columns=args.columns, drop=args.drop)
    runs.check_config(config, data.dim, runs.files.image_shape(data))  # bad values: exit 2 before training
    if args.device is not None:
        import torch

        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            raise UsageError(f"--device {args.device!r} is not a torch device: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here.")
        if device.type == "cuda" and args.nproc > 1 and torch.cuda.device_count() < args.nproc:
            raise UsageError(f"--nproc {args.nproc} --device cuda needs a GPU per process; "
                             f"{torch.cuda.device_count()} are visible here.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder.")
    return config, data


def _run_fit(args, prepared) -> int:
    from .. import distributed, runs

    config, data = prepared
    if args.nproc > 1 and not distributed.launched():  # this process launches the ranks, which train
        print(f"gebm fit: training on {args.nproc} processes (torch.distributed.run)", file=sys.stderr, flush=True)
        return distributed.launch(_without_nproc(args.argv), args.nproc)
    distributed.init(args.device)  # under torchrun: join the ranks (NCCL for cuda, else gloo)
    device = distributed.rank_device(args.device)  # cuda: this rank's GPU
    main = distributed.is_main()
    log = (lambda msg: print(f"gebm fit: {msg}", file=sys.stderr, flush=True)) if main else (lambda msg: None)  # noqa: E731
    log(f"data: {_describe_data(data)}")
    try:
        with _threads(args.threads):
            run = runs.fit_run(args.out, data, config, seed=args.seed, device=None if device is None else str(device),
                               progress=args.progress, checkpoint_every=args.checkpoint_every,
                               overwrite=args.overwrite, log=log)
    except runs.RunMismatch as e:
        raise UsageError(str(e)) from None
    if not main:  # rank 0 reports
        return EXIT_OK
    s = run.info.get("summary", {})
    base_name = run.config["base"]["class"]
    if run.already_done:  # fit_run said so (once, on stderr); nothing was written
        print(f"The GEBM on {data.metadata.get('name')} ({data.dim} dims) in {run.path}, "
              f"finished {run.info.get('finished', '?')}:")
    else:
        print(f"Fitted a GEBM on {data.metadata.get('name')} ({data.dim} dims) into {run.path}")
    print(f"  NLL in nats per example, {_nll_space(data.metadata)}")
    monitor_label = {"val_nll": "NLL", "kale_val": "KALE value"}
    rows = []
    if "mle" in s:
        mle, kale = s["mle"], s.get("kale", {})
        rows += [
            (f"base ({base_name}, MLE) validation NLL", _fmt(mle.get("best_val_nll"))),
            (f"GEBM (KALE) validation {monitor_label.get(kale.get('monitor'), 'value')}",
             _fmt(kale.get("best_val_nll"))),
            ("MLE epochs / wall time", f"{mle.get('epochs')} / {_fmt(mle.get('wall_time'), digits=1)} s"),
            ("KALE epochs / wall time", f"{kale.get('epochs')} / {_fmt(kale.get('wall_time'), digits=1)} s"),
        ]
    if "adversarial" in s:
        adv = s["adversarial"]
        rows += [
            (f"GEBM ({base_name}, adversarial) best validation {adv.get('monitor') or 'value'}",
             _fmt(adv.get("best_val_nll"))),
            ("steps / wall time", f"{adv.get('steps')} / {_fmt(adv.get('wall_time'), digits=1)} s"),
        ]
    print(_table([*rows, ("model", str(run.path / runs.GEBM_FILE))]))
    if not run.already_done:
        _wrote([run.path / runs.RUN_FILE, run.path / runs.HISTORY_FILE, run.path / runs.GEBM_FILE])
    print(f"Next: gebm evaluate {run.path}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ evaluate
def _prepare_run(args):
    from .. import runs

    return runs.load_run(args.run_dir)


def _run_evaluate(args, run) -> int:
    import json

    from .. import runs

    if args.device is not None:
        run.gebm.to(_torch_device(args.device))
    with _threads(args.threads):
        res = runs.evaluate_run(run, args.split, num_samples=args.num_samples, batch_size=args.batch_size,
                                seed=args.seed)
    path = Path(args.run_dir) / f"evaluation-{args.split}.json"
    kept = (f"Kept the earlier evaluation with other settings as {res['kept_previous']}"
            if res.get("kept_previous") else None)
    if args.json:
        print(json.dumps(res, indent=2))
        if kept:
            print(kept, file=sys.stderr)
        print(f"Wrote {path}", file=sys.stderr)
        return EXIT_OK
    base_name = run.config["base"]["class"] if isinstance(run.config.get("base"), dict) else "base"
    partition = ("log-partition A_hat (c)", f"{_fmt(res['log_partition'], res['log_partition_stderr'], 4)} "
                                            f"(c = {_fmt(res['c'], digits=4)})")
    ess = ("effective sample size", f"{res['ess']:.0f} of {res['num_samples']} base samples")
    if res["has_density"]:
        print(f"{res['dataset']}, {args.split} split ({res['num_examples']} examples): NLL in {res['nll_units']}")
        print(_table([
            (f"base ({base_name}) NLL", _fmt(res["base_nll"], res["base_nll_stderr"])),
            ("GEBM NLL (importance sampling)", _fmt(res["nll"], res["nll_stderr"])),
            ("GEBM NLL, KALE upper bound", _fmt(res["nll_bound"], res["nll_bound_stderr"])),
            ("Delta NLL = GEBM - base (paired; < 0 is better)", _fmt(res["delta_nll"], res["delta_nll_stderr"])),
            ("KALE F(E, c)", _fmt(res["kale"])),
            partition,
            ess,
        ]))
        orig = res.get("original_units")
        if orig:
            shift = _fmt(orig["log_abs_det_whitening"])
            print(f"In the data's own units (NLL - log|det W| of the whitening, {shift}): "
                  f"base {_fmt(orig['base_nll'])}, GEBM {_fmt(orig['nll'])}, KALE bound {_fmt(orig['nll_bound'])} "
                  "nats per example")
        print(f"Verdict: {res['verdict']}")
    else:
        print(f"{res['dataset']}, {args.split} split ({res['num_examples']} examples): the base {base_name} has no "
              "density, so there is no NLL; the KALE value and the log-partition:")
        print(_table([("KALE F(E, c)", _fmt(res["kale"])), partition, ess]))
    if res.get("warning"):
        print(f"Warning: {res['warning']}")
    if kept:
        print(kept)
    print(f"Wrote {path} (M = {res['num_samples']} base samples, seed {res['seed']})")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ sample
def _takes_step_size(method: str) -> bool:
    from ..sampling.registry import get_sampler

    spec = get_sampler(method)
    return spec.passthrough is not None or "step_size" in spec.defaults


# the CLI's sampling flags, their sample_latent keywords and built-in defaults. A flag that is None, or equal to
# its parser default when the parser has one (an explicit value equal to it cannot be told apart), yields to
# the run configuration's [sample] value.
_SAMPLE_FLAGS = {"method": ("method", "nuts"), "num_samples": ("num_samples", 1000),
                 "warmup": ("warmup_steps", 500), "chains": ("num_chains", 4), "temperature": ("temperature", 1.0),
                 "seed": ("seed", 0), "backend": ("backend", None), "step_size": ("step_size", None),
                 "friction": ("friction", None), "chain_method": ("chain_method", None)}
_METHOD_FREE = {"num_samples", "warmup_steps", "num_chains", "temperature", "seed"}  # apply to every method


def _apply_sample_config(args, table: dict) -> None:
    """Fill the flags left at their defaults from the run's ``[sample]`` table; other keys go to --option.

    Precedence: an explicit flag, then ``[sample]``, then the built-in default. The table's method-specific
    keys (step size, backend, options) apply only when the method sampled is the table's (default nuts).
    """
    from .parser import build_parser

    table = dict(table or {})
    table.pop("progress", None)
    parsed_defaults = build_parser().parse_args(["sample", "RUN_DIR"])
    # given: a value other than the parser's default (a parser default of None marks every value given)
    given = {flag for flag in _SAMPLE_FLAGS if getattr(args, flag) is not None
             and (getattr(parsed_defaults, flag) is None or getattr(args, flag) != getattr(parsed_defaults, flag))}
    if "method" not in given and "method" in table:
        args.method = table["method"]
    same_method = args.method == table.get("method", "nuts")
    options = {o.split("=", 1)[0].strip() for o in args.options}  # --option KEY=VALUE wins too
    for flag, (key, _) in _SAMPLE_FLAGS.items():
        value = table.pop(key, None)
        if (flag in given or flag == "method" or key in options or value is None
                or not (key in _METHOD_FREE or same_method)):
            continue
        setattr(args, flag, value)
    for flag, (_, default) in _SAMPLE_FLAGS.items():  # neither given nor in [sample]: the built-in default
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    args.config_options = {k: v for k, v in table.items() if k not in options} if same_method else {}


def _check_sample_flags(args) -> None:
    from ..sampling.registry import sampler_names

    if args.method is None:  # left to the run's [sample] table
        return
    if args.method not in sampler_names():
        raise UsageError(f"the run's [sample] method {args.method!r} is not a sampler (known: "
                         f"{', '.join(sampler_names())}).")
    if args.backend == "numpyro":
        if args.method not in sampler_names("numpyro"):
            methods = ", ".join(sampler_names("numpyro"))
            raise UsageError(f"--backend numpyro supports --method {methods}, not {args.method!r}.")
        _check_numpyro()
    if args.friction is not None and args.method != "kinetic":
        raise UsageError(f"--friction applies to --method kinetic, not {args.method!r}.")
    if args.step_size is not None and not _takes_step_size(args.method):
        raise UsageError(f"--step-size does not apply to --method {args.method!r} (it takes no steps).")


def _prepare_sample(args):
    from .. import runs

    _check_sample_flags(args)  # the flags as given, before reading the run
    _parse_options(args.options)
    if args.out is not None and Path(args.out).suffix.lower() not in SAMPLE_SUFFIXES:
        raise UsageError(f"--out should be an HDF5 file ending in {' or '.join(SAMPLE_SUFFIXES)}. Got {args.out!r}.")
    if args.netcdf is not None and Path(args.netcdf).suffix.lower() != ".nc":
        raise UsageError(f"--netcdf should end in .nc. Got {args.netcdf!r}.")
    run = runs.load_run(args.run_dir)
    _apply_sample_config(args, run.config.get("sample", {}))
    if args.backend is None:
        args.backend = runs.default_backend(args.method)
    _check_sample_flags(args)  # with the run's [sample] values filled in
    _prepare_sample_devices(args)
    kwargs = {**getattr(args, "config_options", {}), **_parse_options(args.options)}
    for name in ("step_size", "friction"):
        if getattr(args, name) is not None:
            if name in kwargs:
                raise UsageError(f"{name} is given both as --{name.replace('_', '-')} and as --option.")
            kwargs[name] = getattr(args, name)
    return run, kwargs


def _prepare_sample_devices(args) -> None:
    """Check --chain-method against the method and backend, and set up --device and --host-devices: for
    numpyro they must take effect before JAX initialises, so this runs before anything calls JAX."""
    from ..sampling.driver import check_chain_method
    from ..sampling.registry import get_sampler

    args.chain_method = check_chain_method(get_sampler(args.method), args.backend, args.chain_method)
    if args.backend != "numpyro":
        if args.host_devices is not None:
            raise UsageError("--host-devices applies to --backend numpyro (JAX devices); pyro's parallel chains "
                             "run in processes.")
        if args.device is not None:
            _torch_device(args.device)  # UsageError: not a torch device, or CUDA absent
        if args.chain_method == "parallel":
            from ..sampling.pyro_mcmc import max_parallel_chains

            if args.chains > max_parallel_chains():
                raise UsageError(f"--chain-method parallel runs one process per chain, and Pyro runs at most "
                                 f"{max_parallel_chains()} here (CPUs - 1); use --chains "
                                 f"{max_parallel_chains()} or --chain-method sequential.")
        return
    import jax

    if args.device is not None:
        kind = args.device.split(":")[0]
        if kind not in ("cpu", "cuda", "gpu"):
            raise UsageError(f"--device {args.device!r} with --backend numpyro should be cpu or cuda.")
        if kind == "cpu":
            jax.config.update("jax_platforms", "cpu")  # read when JAX initialises
    if args.host_devices is not None:
        from ..numpyro.mcmc import set_host_devices

        try:
            set_host_devices(args.host_devices)
        except RuntimeError as e:
            raise UsageError(f"--host-devices: {e}") from None
    if args.device is not None and jax.default_backend() != ("cpu" if kind == "cpu" else "gpu"):
        raise UsageError(f"--device {args.device}: JAX's backend is {jax.default_backend()} (JAX was initialised "
                         "before, or has no GPU here: install jax with CUDA support).")
    from ..numpyro.mcmc import check_chain_devices

    check_chain_devices(args.chain_method, args.chains)  # ValueError naming --host-devices when too few


def _run_sample(args, prepared) -> int:
    from .. import runs

    run, kwargs = prepared
    if args.backend == "pyro" and args.device is not None:
        run.gebm.to(_torch_device(args.device))
    kwargs = {"chain_method": args.chain_method, **kwargs}  # an --option chain_method=... wins, as for other keys
    try:
        files = runs.sample_run(run, args.out, netcdf=args.netcdf, method=args.method, backend=args.backend,
                                num_samples=args.num_samples, warmup_steps=args.warmup, num_chains=args.chains,
                                temperature=args.temperature, seed=args.seed,
                                progress=args.progress,  # None: a bar on a terminal, periodic lines elsewhere
                                **kwargs)
    except TypeError as e:
        if "keyword argument" in str(e):  # an --option the sampler does not take
            raise UsageError(f"--option: {e}") from None
        raise
    post = files.idata.posterior
    attrs = post.attrs
    print(f"Drew {post.sizes['chain']} x {post.sizes['draw']} samples with {args.method} ({args.backend}) "
          f"in {_fmt(attrs.get('sampling_time'), digits=1)} s")
    if "x_data" in post:
        print(f"x_data: the draws in the data's units, by column ({', '.join(map(str, post['column'].values[:3]))}"
              f"{', ...' if post.sizes['column'] > 3 else ''}); x: the model's whitened PCA coordinates")
    _wrote([files.hdf5, files.netcdf])
    print(f"Next: gebm diagnose {files.netcdf} --plots {Path(files.netcdf).parent / 'plots'}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ diagnose
def _in_data_units(idata, reference, metadata: dict):
    """The draws (``x_data`` of the file, or ``x`` mapped back for files without it) and held-out points in the
    data's units, with the data's column names (None when the run's data were not whitened)."""
    from .. import units
    from ..runs.samples import whitened

    if not whitened(metadata):
        return None
    x = idata.posterior["x"]
    copy = idata.copy()
    data = idata.posterior["x_data"].values if "x_data" in idata.posterior else units.to_original(x.values, metadata)
    copy.posterior["x"] = x.copy(data=data)
    copy.posterior["x"].attrs["space"] = "the data's own units (inverse whitening), by column name"
    return copy, units.to_original(reference, metadata), [str(c) for c in units.column_names(metadata)]


def _default_var(idata) -> str:
    """``z`` for a generator base (latent dim < data dim, e.g. images: hundreds of pixels say little), else ``x``."""
    post = idata.posterior
    generator = post["z"].shape[-1] < post["x"].shape[-1] or bool(post.attrs.get("image_shape"))
    return "z" if generator else "x"


def _image_shape(idata) -> tuple[int, ...] | None:
    text = str(idata.posterior.attrs.get("image_shape") or "")
    return tuple(int(v) for v in text.split(",")) if text else None


def _prepare_diagnose(args):
    from .. import runs

    idata = runs.read_samples(args.file)
    if args.var is None:
        args.var = _default_var(idata)
    if args.var not in idata.posterior:
        raise UsageError(f"{args.file!r} has no posterior variable {args.var!r} (it has {list(idata.posterior)}).")
    reference = None
    run_dir = args.run_dir or idata.posterior.attrs.get("run_dir") or None
    if run_dir and args.plots and (args.var == "x" or _image_shape(idata)):
        try:
            data = runs.load_run(run_dir).data
            reference = (getattr(data, args.split), data.metadata)
        except (FileNotFoundError, ValueError) as e:
            if args.run_dir:  # asked for explicitly: an error
                raise
            print(f"gebm diagnose: no held-out data for the pair plot ({e})", file=sys.stderr)
    if args.plots:
        plots = Path(args.plots)
        if plots.exists() and not plots.is_dir():
            raise UsageError(f"--plots {str(plots)!r} exists and is not a folder.")
    return idata, reference


def _diagnose_names(idata, var: str) -> list[str]:
    """The tables of ``gebm diagnose``: x in the data's units first (when the file has them), z with the potential."""
    if var == "z":
        return ["z", "lp"] if "lp" in idata.sample_stats else ["z"]
    if _image_shape(idata):  # pixels: the potential says more than 784 rows of the first pixels
        return ["lp"] if "lp" in idata.sample_stats else ["x"]
    return ["x_data", "x"] if "x_data" in idata.posterior else ["x"]


def _run_diagnose(args, prepared) -> int:
    import json

    import numpy as np

    from .. import diagnostics

    idata, reference = prepared
    names = _diagnose_names(idata, args.var)
    run = diagnostics.run_summary(idata, names)
    if args.json:
        tables = {
            "run": run,
            "chains": json.loads(diagnostics.chain_summary(idata).to_json(orient="index")),
            "summary": json.loads(diagnostics.summary(idata, [args.var]).to_json(orient="index")),
            "tables": {name: {"rows": diagnostics.describe(name, idata),
                              "summary": json.loads(diagnostics.summary(idata, name).to_json(orient="index"))}
                       for name in names},
            "verdict": diagnostics.verdict(run),
        }
        print(json.dumps(tables, indent=2))
    else:
        print(diagnostics.report(idata, names, verdict_line=False))
    if args.plots:
        plots = Path(args.plots)
        written = []
        shape = _image_shape(idata)
        plotted = "x_data" if args.var == "x" and "x_data" in idata.posterior else args.var
        if idata.posterior.sizes["draw"] < diagnostics.MIN_DRAWS:
            print(f"gebm diagnose: no trace or rank plots: {idata.posterior.sizes['draw']} draw(s) per chain",
                  file=sys.stderr)
        elif not (shape and plotted == "x"):  # traces of single pixels say nothing
            written += [
                diagnostics.plot_trace(idata, plots / f"trace_{args.var}.png", var_name=plotted,
                                       max_dims=args.max_dims),
                diagnostics.plot_rank(idata, plots / f"rank_{args.var}.png", var_name=plotted, max_dims=args.max_dims),
            ]
        if shape:
            x = idata.posterior["x"].values
            if x.shape[0] >= 64:  # many chains: the last draw of each
                draws, which = x[:, -1], "last draw of each chain"
            else:  # few chains: draws evenly spread over the run (neighbours are correlated)
                flat = x.reshape(-1, x.shape[-1])
                draws, which = flat[np.linspace(0, len(flat) - 1, min(64, len(flat))).astype(int)], "evenly spaced"
            method = idata.posterior.attrs.get("method", "")
            written.append(diagnostics.plot_image_grid(draws, shape, plots / "grid_x.png",
                                                       title=f"GEBM draws ({method}, {which})"))
            if reference is not None:
                written.append(diagnostics.plot_image_grid(np.asarray(reference[0]), shape,
                                                           plots / f"grid_{args.split}.png",
                                                           title=f"held-out images ({args.split} split)"))
        elif reference is not None:
            held_out, metadata = reference
            pair_idata, labels = idata, None
            original = _in_data_units(idata, np.asarray(held_out), metadata)
            if original is not None:  # the pair plot in the data's own units and column names
                pair_idata, held_out, labels = original
            written.append(diagnostics.plot_pair(pair_idata, held_out, plots / "pair_x.png", max_dims=args.max_dims,
                                                 labels=labels))
        _wrote(written, file=sys.stderr if args.json else sys.stdout)
    if not args.json:
        print(f"\nVerdict: {diagnostics.verdict(run)}")  # the last line, after the plots
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "fit": (_prepare_fit, _run_fit),
    "evaluate": (_prepare_run, _run_evaluate),
    "sample": (_prepare_sample, _run_sample),
    "diagnose": (_prepare_diagnose, _run_diagnose),
}
