"""`python -m lymphcad ...`: the same command line as the `lymphcad` script."""

import sys

from lymphcad.cli import main

if __name__ == "__main__":
    sys.exit(main())
