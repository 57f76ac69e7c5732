"""The latency histogram's fixed buckets and its quantile: the agent fills histograms
with these bounds and the control plane reads them back, so both take them from here.

Bounds are seconds, upper bounds inclusive as in Prometheus; a histogram has one more
slot than bounds, counting what is above the largest bound.
"""

from collections.abc import Sequence

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def quantile(counts: Sequence[int] | None, q: float) -> float | None:
    """Estimate the `q` quantile (0..1) of bucket `counts` by linear interpolation inside
    its bucket, as Prometheus' histogram_quantile does; None when empty. A quantile in
    the overflow slot is reported as the largest bound."""
    total = sum(counts) if counts else 0
    if total == 0:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for upper, n in zip(LATENCY_BUCKETS_S, counts or (), strict=False):
        if n and seen + n >= rank:
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = upper
    return LATENCY_BUCKETS_S[-1]
