"""Run one firewall tool: an argv list (never a shell string), a timeout, captured output."""

import logging
import subprocess

log = logging.getLogger(__name__)

TOOL_TIMEOUT_S = 30.0


class ToolError(RuntimeError):
    """A firewall tool failed; the message has its argv, exit code and stderr."""


def run_tool(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    """Run `argv`, feed it `stdin`, return its stdout; raise `ToolError` on failure."""
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise ToolError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout
