"""The desired-state schema shared by the control plane and every agent process.

`stack` validates a user's stack body into typed, frozen dataclasses; `document` builds
and checks the versioned, hashed desired-state document the agent pulls; `hashing` is the
one definition of canonical JSON. Both sides import from here so they can never disagree.
"""

from agent.schema.errors import ValidationError
from agent.schema.hashing import canonical_json, document_hash
from agent.schema.stack import (
    SECURITY_MODES,
    HealthSpec,
    SecretEnv,
    ServiceSpec,
    StackSpec,
    parse_stack,
)

__all__ = [
    "SECURITY_MODES",
    "HealthSpec",
    "SecretEnv",
    "ServiceSpec",
    "StackSpec",
    "ValidationError",
    "canonical_json",
    "document_hash",
    "parse_stack",
]
