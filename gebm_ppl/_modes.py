"""``eval_mode``: put modules in eval mode for a block, then restore every submodule's training flag."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "train_mode"]


def _flags(modules: tuple[nn.Module, ...]) -> list[tuple[nn.Module, bool]]:
    for m in modules:
        if not isinstance(m, nn.Module):
            raise TypeError(f"eval_mode expects torch.nn.Module arguments. Got {type(m).__name__}.")
    seen: set[int] = set()
    flags = []
    for m in modules:
        for sub in m.modules():  # every submodule: a child may have been in a different mode from its parent
            if id(sub) not in seen:
                seen.add(id(sub))
                flags.append((sub, sub.training))
    return flags


@contextmanager
def _mode(modules: tuple[nn.Module, ...], training: bool) -> Iterator[None]:
    flags = _flags(modules)
    try:
        for m in modules:
            m.train(training)
        yield
    finally:
        for sub, flag in flags:
            sub.training = flag  # restore each submodule's own flag (``train(flag)`` would overwrite children)


def eval_mode(*modules: nn.Module):
    """Context manager: ``modules`` (and their submodules) in eval mode inside the block.

    On exit (also on an exception) every submodule gets back the training flag it had on entry,
    so a frozen base kept in eval mode inside a training GEBM stays in eval mode.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    return _mode(modules, False)


def train_mode(*modules: nn.Module):
    """Context manager: ``modules`` (and their submodules) in training mode inside the block; restores on exit."""
    return _mode(modules, True)
