"""The states of the proxy's two kinds of connection, shared by their modules.

A client connection (client*.py) has a parser state (`P_*`, with what its deadline
means in brackets) and a bit mask of reasons it stopped reading (`R_*`); a backend
connection (upstream*.py) has a state (`U_*`).
"""

# Where the parser is in the current request (deadline meaning in brackets).
P_IDLE = 0  # between requests [idle timeout when nothing is in flight]
P_HEAD = 1  # request head arriving [head timeout, from its first byte]
P_BODY = 2  # request body arriving [body timeout, between reads]
P_UPGRADE = 3  # upgrade request sent; waiting for the backend's answer [none]

# Reasons to stop reading from the client (a bit mask: reading resumes when all clear).
R_PIPELINE = 1  # requests queued behind the one being answered
R_UPSTREAM = 2  # the backend is not reading the request body fast enough
R_PENDING = 4  # too much body buffered while the backend connection is opened

# A backend connection.
U_CONNECTING = 0
U_IDLE = 1  # in the pool
U_ACTIVE = 2  # an exchange is in flight
U_TUNNEL = 3  # after 101: raw bytes both ways
U_CLOSED = 4
U_SWITCHING = 5  # 101 head parsed; the tunnel starts with the rest of this read
