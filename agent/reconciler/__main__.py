import sys

from agent.cli import main

sys.exit(main(["agent", "reconciler", *sys.argv[1:]]))
