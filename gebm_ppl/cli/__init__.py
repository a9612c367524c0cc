"""The ``gebm`` command: fit, evaluate, sample and diagnose GEBMs without writing Python.

:func:`main` parses the arguments (:mod:`.parser`) and maps errors to exit codes; the commands themselves
(which call :mod:`gebm_ppl.runs` and :mod:`gebm_ppl.diagnostics` and print) are in :mod:`.commands`.
Exit codes: 0 success, 1 runtime failure (for example a diverged training run), 2 bad input or
usage (unknown dataset, unreadable file, inconsistent options), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from .commands import COMMANDS, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from .parser import build_parser

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]

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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # gebm fit --nproc N relaunches itself with these
    debug = getattr(args, "debug", False) or os.environ.get("GEBM_DEBUG", "") not in ("", "0")
    prog = f"gebm {args.command}"
    prepare, run = COMMANDS[args.command]

    def report(kind: str, err: BaseException) -> None:
        if debug:
            traceback.print_exception(err)
        print(f"{prog}: {kind}: {err}", file=sys.stderr)

    with _one_line_warnings(prog):
        return _prepare_and_run(prog, prepare, run, args, report)


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Warnings print as one line, ``gebm fit: warning: <message>``, without a source path and code line (a
    warning that an error filter raises, or that a recorder catches, is unaffected)."""
    old = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"{prog}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = old


def _prepare_and_run(prog: str, prepare, run, args, report) -> int:
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
