"""Resolve git refs (branch, tag, HEAD, full SHA) to commit SHAs with `git ls-remote`.

Repo URLs are user input, so git runs with: no terminal prompts, ssh in batch mode, and a
protocol allow-list (`GIT_ALLOW_PROTOCOL`) that excludes `ext::` (which would run an
arbitrary command) and every other transport we do not offer. Each repo is listed once
per save however many services use it, with a timeout after which git is killed.

`pick_commit` (which line of ls-remote output a ref means) is pure and tested alone.
"""

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass

from agent.schema.stack import is_commit_sha

ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
LS_REMOTE_TIMEOUT_S = 20.0


class RefError(Exception):
    """A ref could not be resolved; `detail` says why and what to do."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class RefRequest:
    service: str
    repo: str
    ref: str


def parse_ls_remote(output: str) -> dict[str, str]:
    """ls-remote lines ``<sha>\\t<refname>`` → {refname: sha}."""
    refs: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        if is_commit_sha(sha) and name:
            refs[name] = sha
    return refs


def pick_commit(refs: dict[str, str], ref: str) -> str | None:
    """The commit `ref` names in a repo's ref list; annotated tags are peeled to their commit."""
    if ref == "HEAD":
        return refs.get("HEAD")
    # a branch wins over a tag of the same name (as `git checkout` does); a tag's peeled
    # entry (`^{}`) is the commit an annotated tag points at
    for name in (
        f"refs/heads/{ref}",
        f"refs/tags/{ref}^{{}}",
        f"refs/tags/{ref}",
        f"{ref}^{{}}",
        ref,
    ):
        if name in refs:
            return refs[name]
    return None


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS,
        GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=10",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


async def ls_remote(repo: str, timeout_s: float = LS_REMOTE_TIMEOUT_S) -> dict[str, str]:
    """All refs of `repo`; RefError when git fails or takes longer than `timeout_s`."""
    proc = await asyncio.create_subprocess_exec(
        "git", "-c", "protocol.ext.allow=never", "ls-remote", "--", repo,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_git_env(),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RefError(f"git ls-remote {repo} did not answer within {timeout_s:g} s") from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        last = reason[-1] if reason else f"exit status {proc.returncode}"
        raise RefError(f"cannot read repository {repo}: {last}")
    return parse_ls_remote(out.decode(errors="replace"))


async def resolve_all(requests: Iterable[RefRequest]) -> dict[str, str]:
    """{service: commit} for every request; raises ResolveFailure on the first failure.

    A 40-hex ref is taken as is (ls-remote cannot list arbitrary commits); everything else
    is looked up, each distinct repo listed once, repos in parallel.
    """
    reqs = list(requests)
    repos = sorted({r.repo for r in reqs if not is_commit_sha(r.ref)})
    listings = await asyncio.gather(*(ls_remote(repo) for repo in repos), return_exceptions=True)
    by_repo = dict(zip(repos, listings, strict=True))
    commits: dict[str, str] = {}
    for i, r in enumerate(reqs):
        if is_commit_sha(r.ref):
            commits[r.service] = r.ref
            continue
        listing = by_repo[r.repo]
        if isinstance(listing, RefError):
            raise ResolveFailure(i, r, "repo", f"service {r.service!r}: {listing.detail}")
        if isinstance(listing, BaseException):
            raise listing
        sha = pick_commit(listing, r.ref)
        if sha is None:
            raise ResolveFailure(
                i, r, "ref",
                f"service {r.service!r}: ref {r.ref!r} does not exist in {r.repo}; "
                "use a branch, a tag or a full 40-hex commit SHA",
            )  # fmt: skip
        commits[r.service] = sha
    return commits


class ResolveFailure(Exception):
    """Service number `index` could not be resolved; `key` is the field to blame (ref/repo)."""

    def __init__(self, index: int, request: RefRequest, key: str, detail: str) -> None:
        super().__init__(detail)
        self.index = index
        self.request = request
        self.key = key
        self.detail = detail
