"""The svc.internal DNS responder and the host resolver wiring around it.

* `wire` parses the question of a query (a fast hand-rolled path, no dnslib).
* `zone` is the name set (`<service>.<suffix>`) taken from the bus's route table.
* `answers` precomputes, with dnslib, every answer the zone can give, so answering a
  query is a dict lookup and a few byte concatenations.
* `server` is the UDP/TCP I/O around `answers`; `main` runs it with the bus follower.
* `wiring` points the host's resolver at it: a systemd-resolved drop-in or a managed
  block in /etc/hosts.
"""
