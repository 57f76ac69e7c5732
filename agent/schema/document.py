"""The desired-state document: a stack with every git ref resolved, versioned and hashed.

The control plane builds it with `build_document`; the agent checks it with
`parse_document`, which recomputes the hash and re-validates the content, so a corrupted or
tampered document is refused before anything on the server changes.
"""

from dataclasses import dataclass
from typing import Any

from agent.schema.errors import ValidationError
from agent.schema.hashing import document_hash
from agent.schema.stack import ServiceSpec, StackSpec, is_commit_sha, parse_stack


@dataclass(frozen=True)
class DesiredService:
    spec: ServiceSpec
    commit: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class DesiredState:
    stack_id: str
    version: int
    hash: str
    stack: StackSpec
    services: tuple[DesiredService, ...]
    raw: dict[str, Any]

    def service(self, name: str) -> DesiredService | None:
        return next((s for s in self.services if s.name == name), None)


def build_document(
    stack_id: str, version: int, spec: StackSpec, commits: dict[str, str]
) -> dict[str, Any]:
    """The document for `spec` at `version`, each service carrying its resolved commit."""
    services = []
    for svc in spec.services:
        entry = svc.to_dict()
        entry["commit"] = commits[svc.name]
        services.append(entry)
    doc: dict[str, Any] = {
        "stack_id": stack_id,
        "name": spec.name,
        "version": version,
        "poll_interval_s": spec.poll_interval_s,
        "security_mode": spec.security_mode,
        "proxy": {"port": spec.proxy_port},
        "dns": {"suffix": spec.dns_suffix},
        "services": services,
    }
    doc["hash"] = document_hash(doc)
    return doc


def content_hash(spec: StackSpec, commits: dict[str, str]) -> str:
    """Hash of the content alone (no id, no version): equal content means nothing changed."""
    return document_hash(build_document("", 0, spec, commits))


def parse_document(doc: Any) -> DesiredState:
    """Validate a document received from the control plane (or read back from the cache)."""
    if not isinstance(doc, dict):
        raise ValidationError("document", "must be a JSON object")
    claimed = doc.get("hash")
    if not isinstance(claimed, str) or claimed != document_hash(doc):
        raise ValidationError("hash", "does not match the document's content")
    stack_id, version = doc.get("stack_id"), doc.get("version")
    if not isinstance(stack_id, str) or not stack_id:
        raise ValidationError("stack_id", "must be a non-empty string")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError("version", "must be a positive integer")
    commits: dict[str, str] = {}
    bodies = []
    for i, svc in enumerate(doc.get("services") or []):
        if not isinstance(svc, dict):
            raise ValidationError(f"services[{i}]", "must be an object")
        commit = svc.get("commit")
        if not isinstance(commit, str) or not is_commit_sha(commit):
            raise ValidationError(f"services[{i}].commit", "must be a 40-hex commit SHA")
        commits[str(svc.get("name"))] = commit
        bodies.append({k: v for k, v in svc.items() if k != "commit"})
    spec = parse_stack(
        {
            "name": doc.get("name", stack_id),
            "security_mode": doc.get("security_mode"),
            "poll_interval_s": doc.get("poll_interval_s"),
            "proxy": doc.get("proxy"),
            "dns": doc.get("dns"),
            "services": bodies,
        }
    )
    services = tuple(DesiredService(spec=s, commit=commits[s.name]) for s in spec.services)
    return DesiredState(
        stack_id=stack_id, version=version, hash=claimed, stack=spec, services=services, raw=doc
    )
