"""pytest configuration: make tests/common.py importable and keep runs deterministic."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")
