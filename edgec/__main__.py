"""`python -m edgec`: the same entry point as the `edgec` console script."""

import sys

from edgec.cli import main

if __name__ == "__main__":
    sys.exit(main())
