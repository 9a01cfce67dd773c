"""`python -m dnc`: the same command line as the `dnc` console script (`dnc.cli`)."""

import sys

from dnc.cli import main

if __name__ == "__main__":
    sys.exit(main())
