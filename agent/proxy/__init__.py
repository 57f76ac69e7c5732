"""The HTTP reverse proxies: external (path routing) and internal (Host routing).

One engine serves both. A client connection (`client.ClientConnection`) parses request
heads with httptools, asks a router (`routing`) for a target, rewrites the head
(`headers`), and hands the exchange to a pooled keep-alive upstream connection
(`upstream`). Bodies stream both ways with transport flow control; after a `101` the two
sockets are spliced. Failures become responses in one place (`errors`). `server` owns the
listening sockets, the route table, the timeout sweeper and the SIGTERM drain; `main`
wires it to the bus, systemd and privileges.
"""
