"""``python -m gebm_ppl``: the ``gebm`` command (see :mod:`gebm_ppl.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
