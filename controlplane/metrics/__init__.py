"""Metrics on the control plane: agents' point batches in, rollups and retention,
JSON series for the API and charts, Prometheus exposition (docs/metrics.md)."""
