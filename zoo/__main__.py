"""`python -m zoo ...`, the same as the `zoo` command; so that `torchrun -m zoo train ...` starts
one zoo process per rank."""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
