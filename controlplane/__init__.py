"""Berth's control plane: a Quart app (served by Hypercorn) that stores stacks, resolves
their git refs, hands each agent its desired-state document and ingests what agents report.

Layout: `app.create_app` wires the blueprints (`api_user`, `api_agent`, `dashboard`) to one
`AppContext` (database, settings, long-poll watcher); `stacks`, `enrollment` and `status`
hold the logic behind the endpoints; `models` and `migrations/` are the storage; `cli` is
`berth controlplane ...`.
"""
