"""The desired-state schema shared by the control plane and every agent process.

`stack` validates a user's stack body into typed, frozen dataclasses (reading it with
`fields`, the one field validator, and `dnsnames`); `document` builds and checks the
versioned, hashed desired-state document the agent pulls; `hashing` is the one canonical
JSON encoding and the one hash over it; `modes` the security modes. Both sides import
from here so they can never disagree.
"""

from agent.schema.errors import ValidationError
from agent.schema.hashing import canonical_json, document_hash
from agent.schema.modes import SECURITY_MODES, SecurityMode
from agent.schema.stack import (
    HealthSpec,
    SecretEnv,
    ServiceSpec,
    StackSpec,
    parse_stack,
)

__all__ = [
    "SECURITY_MODES",
    "SecurityMode",
    "HealthSpec",
    "SecretEnv",
    "ServiceSpec",
    "StackSpec",
    "ValidationError",
    "canonical_json",
    "document_hash",
    "parse_stack",
]
