"""`python -m zoo.cli ...`, the same as the `zoo` command."""

import sys

from zoo.cli import main

sys.exit(main())
