"""The heartbeat interval, shared by both ends of the return path.

The control plane announces its interval (a setting within these bounds) in every
heartbeat answer; the agent clamps what it is told to the same bounds and uses the
default until the first answer (or with an older control plane). "Stale" and "offline"
on the control plane count missed intervals.
"""

DEFAULT_HEARTBEAT_INTERVAL_S = 15.0
MIN_HEARTBEAT_INTERVAL_S = 1.0
MAX_HEARTBEAT_INTERVAL_S = 60.0
