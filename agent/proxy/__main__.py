"""`python -m agent.proxy` runs the external proxy (the `berth agent proxy` command)."""

import sys

from agent.cli import main

sys.exit(main(["agent", "proxy", *sys.argv[1:]]))
