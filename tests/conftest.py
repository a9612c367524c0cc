"""pytest configuration: make tests/common.py importable and keep runs deterministic."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

# CI has 2 cores shared with JAX's own threads: one torch thread avoids oversubscription
# (measured: the training tests took 154 s with torch's default threads on a loaded machine, 12 s with one).
torch.set_num_threads(1)
