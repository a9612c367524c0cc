"""Progress of a training loop: a tqdm bar on a terminal, one log line per interval elsewhere.

Off a terminal (a log file, a pipe, a batch job) a bar would be silent or garble the file, so the
loop writes one line every ``interval`` seconds at most (and after the first and the last epoch):
epoch/total, step, the training loss, the monitored value, elapsed time and an ETA. Lines go to
standard error, or, once a handler is attached to the ``gebm_ppl.training`` logger (or to
``gebm_ppl``), to that logger at INFO level instead.
"""

from __future__ import annotations

import logging
import math
import sys
import time

__all__ = ["PROGRESS_INTERVAL", "Progress", "format_duration", "logger"]

logger = logging.getLogger("gebm_ppl.training")

PROGRESS_INTERVAL = 10.0  # seconds between two progress lines off a terminal


def format_duration(seconds: float) -> str:
    """``"42s"``, ``"3m07s"`` or ``"1h02m"``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _has_own_handler(log: logging.Logger) -> bool:
    """A handler on ``log`` or a parent below the root (the root's handlers do not count)."""
    while log is not None and log is not logging.root:
        if log.handlers:
            return True
        if not log.propagate:
            return False
        log = log.parent
    return False


def _emit(line: str) -> None:
    if _has_own_handler(logger):
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Reports a loop's epochs: ``update(record)`` after each epoch, ``close(history)`` at the end.

    Args:
        progress: True, False or None. False: nothing. True / None on a terminal (stderr is a TTY):
            a tqdm bar over epochs. True / None elsewhere: periodic log lines.
        desc: the loop's name, first word of every line.
        total: the epochs the run may take (``epochs``, or fewer when ``max_steps`` ends it sooner).
        initial: epochs already done (a resumed run).
        keys: record keys to show (those present and not None).
        interval: seconds between two lines off a terminal.
        stream: the stream whose ``isatty()`` decides (default: ``sys.stderr``).
    """

    def __init__(
        self,
        progress: bool | None,
        desc: str,
        total: int,
        initial: int = 0,
        keys: tuple[str, ...] = ("train_loss",),
        interval: float | None = None,
        stream=None,
    ):
        stream = sys.stderr if stream is None else stream
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.mode = "off" if progress is False else ("bar" if tty else "lines")
        self.desc, self.total, self.initial, self.keys = desc, total, initial, keys
        self.interval = PROGRESS_INTERVAL if interval is None else float(interval)
        self.t0 = time.perf_counter()
        self.last_line: float | None = None
        self.done = initial
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch", leave=False, file=stream)

    def _shown(self, record: dict) -> dict:
        return {k: record[k] for k in self.keys if k and record.get(k) is not None}

    def line(self, record: dict) -> str:
        """The log line for ``record`` (epoch/total, step, values, elapsed and ETA)."""
        elapsed = time.perf_counter() - self.t0
        run = self.done - self.initial
        eta = elapsed / run * max(self.total - self.done, 0) if run > 0 else math.nan
        values = " ".join(f"{k}={_fmt(v)}" for k, v in self._shown(record).items())
        return (
            f"{self.desc}: epoch {record.get('epoch', self.done)}/{self.total} step {record.get('step', '?')} "
            f"{values} | elapsed {format_duration(elapsed)} ETA {format_duration(eta)}".replace("  ", " ")
        )

    def update(self, record: dict) -> None:
        """One epoch done: advance the bar, or write a line if ``interval`` seconds have passed."""
        self.done += 1
        if self.mode == "bar":
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in self._shown(record).items()})
        elif self.mode == "lines":
            now = time.perf_counter()
            first = self.last_line is None
            if first or now - self.last_line >= self.interval or self.done >= self.total:
                _emit(self.line(record))
                self.last_line = now

    def close(self, history=None) -> None:
        """Close the bar; off a terminal, write the summary line (stop reason, best value, wall time)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.mode == "lines" and history is not None:
            best = ""
            if history.best_value is not None:
                best = f", best {history.monitor}={history.best_value:.4g} at epoch {history.best_epoch}"
            _emit(
                f"{self.desc}: done after {len(history.records)} epoch(s), {history.total_steps} steps "
                f"in {format_duration(time.perf_counter() - self.t0)} (stopped by {history.stop_reason}){best}"
            )
