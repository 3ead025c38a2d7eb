"""`python -m ric.cli ...`: the `ric` command, as the tests and launchers that take a module run
it (`python -m ric` does the same)."""

import sys

from ric.cli import main

sys.exit(main())
