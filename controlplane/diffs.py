"""Field-level diff of two desired-state documents (pure).

`diff_documents(a, b)` compares two documents (any two versions of a stack, or the current
one and a proposed one) and says, in terms a person reads: stack settings that changed
(security mode, poll interval, proxy port, DNS suffix, name), services added and removed,
and for each service present in both, every field that changed — the commit moved (with
the range `old..new` and, for GitHub/GitLab/Gitea-style https remotes, a compare URL),
ref, repo, build and run commands, port, path, health, and env keys added / changed /
removed.

Secret values never appear: every value under `env` (or any key whose name contains
"secret") goes through `shown_value`, the one place that decides what a diff may reveal.
A secret env entry is shown as `controlplane.secrets.mask_entry` shows it to people (set or
not, and a fingerprint that changes with the value), and compared in that form too, so a
re-sealed but unchanged value is no change; a plain value is shown; any other structured
value is replaced by `HIDDEN`.
"""

from dataclasses import dataclass
from typing import Any

from controlplane.secrets import is_secret_entry, mask_entry

HIDDEN = "(hidden)"
STACK_FIELDS = ("name", "security_mode", "poll_interval_s", "proxy", "dns")
SERVICE_FIELDS = (
    "repo", "ref", "commit", "build", "run", "port", "path", "strip_prefix", "health",
    "drain_timeout_s",
)  # fmt: skip


def is_sensitive(path: str) -> bool:
    return "secret" in path.lower()


def shown_value(path: str, value: Any) -> Any:
    """What a diff may show of `value` at `path` (e.g. ``env.API_KEY``)."""
    if value is None:
        return None
    if is_secret_entry(value):
        return mask_entry(value)
    if is_sensitive(path):
        return HIDDEN
    if path.startswith("env.") and not isinstance(value, str | int | float | bool):
        return HIDDEN  # any other structured env entry is never shown either
    return value


def _comparable(value: Any) -> Any:
    """The form two env values are compared in: a secret by its mask (fingerprint)."""
    return mask_entry(value) if is_secret_entry(value) else value


@dataclass(frozen=True)
class Change:
    field: str  # dotted: "security_mode", "env.GREETING", "health.path"
    kind: str  # added | removed | changed
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "kind": self.kind, "before": self.before, "after": self.after}


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _changes(
    before: dict[str, Any], after: dict[str, Any], fields: tuple[str, ...] | None
) -> list[Change]:
    keys = fields or tuple(sorted(set(before) | set(after)))
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for key in keys:
        if key in before:
            old.update(_flatten(before[key], key))
        if key in after:
            new.update(_flatten(after[key], key))
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        kind = "added" if path not in old else "removed" if path not in new else "changed"
        out.append(Change(path, kind, shown_value(path, a), shown_value(path, b)))
    return out


def _env_changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if _comparable(a) == _comparable(b) and key in before and key in after:
            continue
        path = f"env.{key}"
        kind = "added" if key not in before else "removed" if key not in after else "changed"
        out.append(Change(path, kind, shown_value(path, a), shown_value(path, b)))
    return out


def compare_url(repo: str, old: str, new: str) -> str | None:
    """A web page showing the commits between two SHAs, for https remotes of the usual
    forges (GitHub, GitLab, Gitea/Forgejo, Codeberg); None for anything else."""
    if not repo.startswith("https://"):
        return None
    base = repo.removesuffix("/").removesuffix(".git")
    host = base.split("/")[2]
    if host == "github.com" or "gitea" in host or host == "codeberg.org":
        return f"{base}/compare/{old}...{new}"
    if "gitlab" in host:
        return f"{base}/-/compare/{old}...{new}"
    return None


def _service_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    fields = _changes(a, b, SERVICE_FIELDS)
    env = _env_changes(a.get("env") or {}, b.get("env") or {})
    extra_keys = tuple(
        sorted((set(a) | set(b)) - set(SERVICE_FIELDS) - {"name", "env"})
    )  # fields this module does not know yet (e.g. secret env entries): keys only
    extra = _changes(a, b, extra_keys) if extra_keys else []
    changes = fields + env + extra
    if not changes:
        return None
    out: dict[str, Any] = {"name": b["name"], "changes": [c.to_dict() for c in changes]}
    if a.get("commit") != b.get("commit") and a.get("commit") and b.get("commit"):
        out["commits"] = {
            "from": a["commit"],
            "to": b["commit"],
            "range": f"{a['commit']}..{b['commit']}",
            "compare_url": compare_url(b.get("repo", ""), a["commit"], b["commit"]),
        }
    return out


def diff_documents(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """What changed from document `a` (None: nothing yet) to document `b`."""
    a = a or {"services": []}
    old = {s["name"]: s for s in a.get("services", [])}
    new = {s["name"]: s for s in b.get("services", [])}
    changed = []
    for name in [s["name"] for s in b.get("services", [])]:
        if name in old:
            entry = _service_diff(old[name], new[name])
            if entry:
                changed.append(entry)
    stack = _changes(a, b, STACK_FIELDS)
    return {
        "from": a.get("version"),
        "to": b.get("version"),
        "stack": [c.to_dict() for c in stack],
        "services": {
            "added": [_added(new[n]) for n in new if n not in old],
            "removed": [n for n in old if n not in new],
            "changed": changed,
        },
        "empty": not stack and not changed and set(old) == set(new),
    }


def _added(service: dict[str, Any]) -> dict[str, Any]:
    """A new service as the diff shows it: its fields, env values through `shown_value`."""
    out = {k: v for k, v in service.items() if k != "env" and not is_sensitive(k)}
    out["env"] = {k: shown_value(f"env.{k}", v) for k, v in (service.get("env") or {}).items()}
    return out


def _fmt(value: Any) -> str:
    if is_secret_entry(value):  # a masked secret: never a value, at most its fingerprint
        if not value.get("set"):
            return "(secret, no value)"
        return f"(secret {value['fingerprint']})" if value.get("fingerprint") else "(secret)"
    if isinstance(value, str):
        return value if value == HIDDEN else repr(value)
    if value is None:
        return "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_text(diff: dict[str, Any], label: str = "stack") -> str:
    """The diff as lines for a terminal: `+` added, `-` removed, `~` changed."""
    lines = [f"{label}: v{diff['from'] or '-'} -> v{diff['to'] or '(new)'}"]
    for c in diff["stack"]:
        lines.append(_change_line(c, "  "))
    for svc in diff["services"]["added"]:
        lines.append(
            f"  + service {svc['name']} ({svc.get('repo')} @ {str(svc.get('commit', ''))[:12]})"
        )
        for key, value in svc.get("env", {}).items():
            lines.append(f"      + env.{key} = {_fmt(value)}")
    for name in diff["services"]["removed"]:
        lines.append(f"  - service {name}")
    for svc in diff["services"]["changed"]:
        lines.append(f"  ~ service {svc['name']}")
        commits = svc.get("commits")
        for c in svc["changes"]:
            if c["field"] == "commit" and commits:
                url = f" {commits['compare_url']}" if commits["compare_url"] else ""
                lines.append(
                    f"      ~ commit {commits['from'][:12]} -> {commits['to'][:12]}"
                    f" (range {commits['range']}){url}"
                )
            else:
                lines.append(_change_line(c, "      "))
    if diff["empty"]:
        lines.append("  (no changes)")
    return "\n".join(lines) + "\n"


def _change_line(c: dict[str, Any], indent: str) -> str:
    if c["kind"] == "added":
        return f"{indent}+ {c['field']} = {_fmt(c['after'])}"
    if c["kind"] == "removed":
        return f"{indent}- {c['field']} (was {_fmt(c['before'])})"
    return f"{indent}~ {c['field']}: {_fmt(c['before'])} -> {_fmt(c['after'])}"
