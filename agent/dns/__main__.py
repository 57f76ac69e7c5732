"""`python -m agent.dns`: the same as `berth agent dns`."""

import sys

from agent.cli import main

sys.exit(main(["agent", "dns", *sys.argv[1:]]))
