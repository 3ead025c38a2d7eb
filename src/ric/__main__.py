"""`python -m ric ...`: the `ric` command (also for launchers that take a module, e.g.
`accelerate launch -m ric`)."""

import sys

from ric.cli import main

sys.exit(main())
