"""The HTTP reverse proxies: external (path routing) and internal (Host routing).

One engine serves both. The connection logic is plain classes without I/O (`sides`
says what each may ask of a socket and of the other side): `client.ClientConnection`
parses request heads with httptools, decides route and usable target (`routing`),
rewrites the head (`headers`) with the framing the parser decided, and hands the
exchange to a pooled keep-alive `upstream.UpstreamConnection` (`pool`). Bodies stream
both ways with flow control; after a `101` the two sockets are spliced. Failures become
responses in one place (`errors`). `drivers` feeds asyncio transports' callbacks to the
logic; `server` owns the listening sockets, the route table, the timeout sweeper, the
per-address connection cap and the SIGTERM drain; `main` wires it to the bus, systemd,
privileges and the file-descriptor limit.
"""
