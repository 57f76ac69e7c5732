"""What the agent measures: proxy traffic per route, service processes, the server.

Everything here is pure aggregation or a thin `/proc` reader; the proxies count into
`routes.RouteMetrics` on their hot path, the reconciler reads `/proc` through `procfs`.
"""
