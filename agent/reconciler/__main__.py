"""`python -m agent.reconciler`: the reconciler, as `berth agent reconciler` runs it."""

import sys

from agent.logs import setup_logging
from agent.reconciler.main import main
from agent.settings import from_argv

settings = from_argv("python -m agent.reconciler", sys.argv[1:])
setup_logging("reconciler")
sys.exit(main(settings))
