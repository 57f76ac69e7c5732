"""The agent's local ZeroMQ bus.

The reconciler is the only publisher of the route table; the proxies and the DNS responder
subscribe. Protocol (snapshot + versioned updates):

* ``PUB`` at ``endpoints.pub``: multipart ``[topic, json]`` on every change, and the latest
  message again every `REPUBLISH_INTERVAL_S` so that a subscriber that joined late, or
  whose connection dropped, converges without asking.
* ``ROUTER`` at ``endpoints.snapshot``: a subscriber sends ``[topic]`` and gets the latest
  ``[topic, json]`` (or ``[topic, b""]`` when nothing was published yet).
* Each table carries a version ``(epoch, seq)``; subscribers apply only newer versions and
  keep the last one on disk, so they serve the last known routes when the reconciler is down.

The firewall helper has its own request/reply socket (``endpoints.firewall``).
"""

from agent.bus.endpoints import BusEndpoints
from agent.bus.messages import ROUTES_TOPIC, Route, RouteTable

__all__ = ["ROUTES_TOPIC", "BusEndpoints", "Route", "RouteTable"]
