"""`python -m agent.dns`: the DNS responder, as `berth agent dns` runs it."""

import sys

from agent.dns.main import main
from agent.logs import setup_logging
from agent.settings import from_argv

settings = from_argv("python -m agent.dns", sys.argv[1:])
setup_logging("dns")
sys.exit(main(settings))
