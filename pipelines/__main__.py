"""`python -m pipelines <command>`: the same tree as the `dnc-pipelines` console script."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
