"""`python -m agent.proxy`: the external proxy, as `berth agent proxy` runs it."""

import sys

from agent.logs import setup_logging
from agent.proxy.main import main_external
from agent.settings import from_argv

settings = from_argv("python -m agent.proxy", sys.argv[1:])
setup_logging("proxy")
sys.exit(main_external(settings))
