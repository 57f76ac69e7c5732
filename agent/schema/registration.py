"""The control plane's answer to an agent's registration (`POST /api/v1/agent/register`):
who the server now is. Built by the control plane (`enrollment.register`), read by the
agent (`cpclient.register`) and kept in its store.
"""

from dataclasses import asdict, dataclass
from typing import Any

from agent.schema.errors import ValidationError


@dataclass(frozen=True)
class Registration:
    instance_id: str
    credential: str  # shown once: the control plane keeps only its digest
    stack_id: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Any) -> "Registration":
        if not isinstance(body, dict):
            raise ValidationError("registration", "must be a JSON object")
        for name in ("instance_id", "credential", "stack_id"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise ValidationError(name, "must be a non-empty string")
        return cls(body["instance_id"], body["credential"], body["stack_id"])
