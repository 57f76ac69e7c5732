"""The query parameters of `GET /api/v1/stacks/{id}/metrics`, checked once (pure).

`from`/`to` are unix seconds (default: the last hour up to now); the resolution read is
the finest one still kept for `from` (raw within the hour, one-minute rollups within a
day, hourly beyond); `step` (seconds) defaults to about 120 points over the range and is
never finer than the resolution read.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.errors import Unprocessable
from controlplane.metrics.points import HOUR, MINUTE, RAW
from controlplane.metrics.store import MINUTE_KEEP_S, RAW_KEEP_S

RAW_STEP_S = 30  # agents ship every 30 s: raw points are no finer than that
TARGET_POINTS = 120
MAX_POINTS = 2000


@dataclass(frozen=True)
class MetricsQuery:
    service: str  # "" : the servers' own figures
    instance: str | None
    t_from: int
    t_to: int
    res: int
    step: int


def _seconds(args: Mapping[str, str], name: str, default: float) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return int(default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise Unprocessable("must be unix seconds", field=name)
    return int(value)


def parse_query(args: Mapping[str, str], now: float) -> MetricsQuery:
    t_to = _seconds(args, "to", now)
    t_from = _seconds(args, "from", t_to - 3600)
    if t_from >= t_to:
        raise Unprocessable("must be before `to`", field="from")
    # (a minute of slack: "the last hour" asked a moment ago is still the raw points)
    if t_from >= now - RAW_KEEP_S - MINUTE:
        res = RAW
    elif t_from >= now - MINUTE_KEEP_S - HOUR:
        res = MINUTE
    else:
        res = HOUR
    finest = res or RAW_STEP_S
    span = t_to - t_from
    step = _seconds(args, "step", 0)
    if step == 0:
        step = max(finest, math.ceil(span / TARGET_POINTS / finest) * finest)
    elif step < finest:
        step = finest
    if span / step > MAX_POINTS:
        raise Unprocessable(f"at most {MAX_POINTS} points per series: raise it", field="step")
    service = args.get("service", "")
    instance = args.get("instance") or None
    return MetricsQuery(service, instance, t_from, t_to, res, step)
