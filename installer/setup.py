"""`berth installer setup`: the root half of install.sh, run from the freshly installed venv.

Order (each step idempotent, so re-running the one-line install is safe):

1. preflight: root, systemd as init, the unit files unpacked, the control plane answering
   `/healthz`;
2. registration: the install token is exchanged for a credential *before anything is
   written*, so a bad token stops here with nothing half-installed (a server that is
   already registered keeps its credential and ignores `--token`);
3. users (`systemd-sysusers`), the bus directory (`systemd-tmpfiles`), the state
   directory, the credential in the reconciler's SQLite (0600, owned by `berth`) plus an
   `install` event in its outbox;
4. `/etc/berth/agent.env`, the units in /etc/systemd/system, enabled and (re)started;
5. wait until every unit is active and the `install` event is acknowledged by the
   control plane: the reconciler sends a heartbeat before it flushes events, so an
   acknowledged event means the first heartbeat was accepted;
6. the security mode (the operator's `--security-mode`, else the stack's), applied through
   the firewall helper with its safety rules: refused if the control plane does not answer
   before, reverted if it stops answering after, and confirmed only once the control plane
   has acknowledged another event through the new rules;
7. a summary.
"""

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from agent import resolverwiring as wiring
from agent.reconciler import admin
from agent.reconciler.admin import AgentState, Registration
from agent.settings import AgentSettings
from agent.statelayout import StateLayout
from installer import plan, system
from installer.layout import (
    AGENT_GROUP,
    AGENT_UNITS,
    FIREWALL_GROUP,
    HELPER_UNITS,
    RECONCILER_USER,
    TARGET,
    Layout,
)
from installer.system import EarlyStop, StepError

log = logging.getLogger("installer")
T = TypeVar("T")

UNIT_FILES = (*AGENT_UNITS, *HELPER_UNITS, TARGET)
SUPPORT_FILES = {"berth.sysusers.conf": "sysusers", "berth.tmpfiles.conf": "tmpfiles"}


def say(message: str) -> None:
    print(f"berth-install: {message}", file=sys.stderr, flush=True)


# ---- preflight ------------------------------------------------------------------------


def preflight(opts: plan.InstallOptions, layout: Layout, units_src: Path) -> None:
    if os.geteuid() != 0:
        raise StepError("preflight: run as root (sudo sh -s -- ...)")
    if not system.systemd_is_init():
        raise StepError("preflight: systemd is not running as init here; Berth needs systemd")
    missing = [f for f in (*UNIT_FILES, *SUPPORT_FILES) if not (units_src / f).is_file()]
    if missing:
        raise StepError(f"preflight: unit files missing in {units_src}: {', '.join(missing)}")
    try:
        resp = requests.get(opts.control_plane + "/healthz", timeout=10)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise StepError(
            f"preflight: the control plane does not answer at {opts.control_plane}/healthz "
            f"({exc.__class__.__name__}); check the URL and that this server can reach it"
        ) from exc


# ---- registration ---------------------------------------------------------------------


def _store_op(layout: Layout, fn: Callable[[AgentState], T]) -> T:
    """Run fn(state) on the reconciler's store as root, then give every SQLite file back
    to the reconciler's user."""
    state = AgentState(layout.state_dir)
    try:
        return fn(state)
    finally:
        state.close()
        if system.user_exists(RECONCILER_USER):
            for f in StateLayout(layout.state_dir).store_files():
                shutil.chown(f, RECONCILER_USER, RECONCILER_USER)
                f.chmod(0o600)


def existing_registration(layout: Layout) -> Registration | None:
    if not layout.store.exists():
        return None
    found: Registration | None = _store_op(layout, lambda s: s.registration())
    return found


def register(opts: plan.InstallOptions) -> Registration:
    if not opts.token:
        raise StepError(
            "registration: --token is required (create an install token in the control plane)"
        )
    try:
        return admin.register(opts.control_plane, opts.token)
    except admin.Rejected as exc:
        raise StepError(
            f"registration: the control plane refused the install token ({exc}); it may be "
            "mistyped, expired or already used: create a new one and run the command again"
        ) from exc
    except admin.Unreachable as exc:
        raise StepError(f"registration: the control plane did not answer: {exc}") from exc


# ---- system changes ------------------------------------------------------------------


def install_accounts_and_dirs(layout: Layout, units_src: Path) -> None:
    system.write_file(layout.sysusers, (units_src / "berth.sysusers.conf").read_text())
    system.run(["systemd-sysusers", str(layout.sysusers)], "create users")
    system.write_file(layout.tmpfiles, (units_src / "berth.tmpfiles.conf").read_text())
    system.run(["systemd-tmpfiles", "--create", str(layout.tmpfiles)], "create /run/berth")
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.state_dir.chmod(0o755)  # the services user must reach its releases below it
    shutil.chown(layout.state_dir, RECONCILER_USER, RECONCILER_USER)
    for group in (AGENT_GROUP, FIREWALL_GROUP):
        if not system.group_exists(group):
            raise StepError(f"create users: group {group!r} is missing after systemd-sysusers")


def store_registration(layout: Layout, reg: Registration) -> str:
    """Save the credential (if new) and queue an `install` event; return the event id."""

    def op(state: AgentState) -> str:
        state.save_registration(reg)
        return state.queue_event("install", f"agent installed on {os.uname().nodename}")

    return str(_store_op(layout, op))


def install_units(layout: Layout, units_src: Path, env_text: str) -> None:
    system.write_file(layout.agent_env, env_text, 0o644)
    for name in UNIT_FILES:
        system.write_file(layout.unit_dir / name, (units_src / name).read_text())
    system.systemctl("daemon-reload")
    system.systemctl("enable", "--quiet", TARGET, *AGENT_UNITS)


def start_units() -> dict[str, str]:
    # restart, not start: a re-run picks up new code and configuration. The reconciler's
    # KillMode=process keeps the services running through it.
    system.systemctl("restart", *AGENT_UNITS)
    system.systemctl("start", TARGET)

    def all_active() -> dict[str, str] | None:
        states = {u: system.unit_state(u) for u in AGENT_UNITS}
        return states if all(s == "active" for s in states.values()) else None

    try:
        return system.wait_for("every unit to be active", all_active, 60)  # type: ignore[return-value]
    except StepError as exc:
        states = {u: system.unit_state(u) for u in AGENT_UNITS}
        bad = [u for u, s in states.items() if s != "active"]
        raise StepError(
            f"start units: not active: {', '.join(f'{u}={states[u]}' for u in bad)}; "
            f"see journalctl -u {bad[0] if bad else 'berth-*'}"
        ) from exc


def switch_or_start(layout: Layout, venv: Path | None) -> dict[str, str]:
    """A re-run on an installed server switches to install.sh's fresh venv the way `berth
    agent upgrade` does (unit by unit, back to the old venv if they do not come up); a
    first install just starts the units."""
    from installer import upgrade

    current = upgrade.current_venv(layout)
    if venv is None or current is None or current.resolve() == venv.resolve():
        say("starting " + ", ".join(AGENT_UNITS))
        return start_units()
    try:
        with upgrade.locked(layout):
            code, message = upgrade.switch(layout, venv.resolve())
    except upgrade.UpgradeError as exc:
        raise StepError(f"switch to the new venv: {exc}") from exc
    if code != upgrade.UPGRADED:
        raise StepError(f"switch to the new venv: {message}")
    say(message)
    system.systemctl("start", TARGET)  # units new in this version (e.g. a .path unit)
    return {u: system.unit_state(u) for u in AGENT_UNITS}


def wait_acknowledged(layout: Layout, event_id: str, timeout_s: float, what: str) -> None:
    def acked() -> bool:
        return bool(_store_op(layout, lambda s: s.is_acknowledged(event_id)))

    system.wait_for(what, acked, timeout_s)


def desired_state(layout: Layout, timeout_s: float) -> dict[str, Any] | None:
    try:
        found = system.wait_for(
            "the first desired state",
            lambda: _store_op(layout, lambda s: s.desired_state()),
            timeout_s,
        )
    except StepError:
        return None
    return found if isinstance(found, dict) else None


# ---- security mode ------------------------------------------------------------------


def _ask_consent() -> bool:
    """Ask on the terminal (stdin is the piped script under `curl | sh`)."""
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(
                "tunnel-only blocks ALL inbound traffic, SSH included; you will reach this "
                "server only through the tunnel. Type 'yes' to go on: "
            )
            tty.flush()
            return tty.readline().strip().lower() == "yes"
    except OSError:
        return False


def firewall(args: list[str], layout: Layout, timeout_s: float = 300) -> tuple[int, dict[str, Any]]:
    """One request to the running helper (berth-firewall.service), built and validated
    exactly as `berth firewall` builds it. Never the CLI's in-process fallback: the
    helper is up (setup waited for it), and a slow answer must not make two processes
    change the firewall at once."""
    from agent.bus.endpoints import BusEndpoints
    from agent.bus.firewall import FirewallClient, FirewallUnavailable, RequestError
    from agent.firewall.cli import build_parser, build_request

    try:
        req = build_request(build_parser().parse_args(args), dict(os.environ))
    except RequestError as exc:
        return 2, {"error": f"{exc.field}: {exc.message}"}
    try:
        reply = FirewallClient(BusEndpoints(layout.run_dir)).request(req, timeout_s)
    except FirewallUnavailable as exc:
        return 1, {"error": str(exc)}
    body: dict[str, Any] = json.loads(reply.to_json())
    return (0 if reply.ok else 1), body


def apply_security_mode(
    opts: plan.InstallOptions, layout: Layout, mode: str, proxy_port: int | None
) -> str:
    consent = opts.consent_block_ssh
    if mode == "tunnel-only" and not consent:
        consent = _ask_consent()
        if not consent:
            raise StepError(
                "security mode: tunnel-only blocks SSH too; pass --consent-block-ssh (or answer "
                "yes on a terminal) to accept that. Nothing was changed in the firewall"
            )
    if mode == "proxy-only" and proxy_port is None:
        raise StepError(
            "security mode: proxy-only needs the stack's proxy port; no desired state yet"
        )
    code, reply = firewall(plan.firewall_argv(opts, mode, proxy_port, layout, consent), layout)
    if code != 0:
        detail = reply.get("error") or ((reply.get("status") or {}).get("last_apply") or {}).get(
            "detail"
        )
        raise StepError(f"security mode {mode}: the firewall helper refused or failed: {detail}")
    status = reply.get("status") or {}
    if status.get("pending_confirm_until"):
        # prove the control plane is still reachable through the new rules, then confirm
        event_id = str(
            _store_op(layout, lambda s: s.queue_event("security", f"firewall {mode} applied"))
        )
        try:
            wait_acknowledged(
                layout,
                event_id,
                max(10.0, opts.confirm_timeout_s / 2),
                "the control plane through the new rules",
            )
        except StepError as exc:
            firewall(["revert"], layout)
            raise StepError(
                f"security mode {mode}: reverted, the control plane stopped answering: {exc}"
            ) from exc
        code, reply = firewall(["confirm"], layout)
        if code != 0:
            raise StepError(f"security mode {mode}: confirm failed: {reply}")
        status = reply.get("status") or {}
    return f"{status.get('mode', mode)} via {status.get('backend') or 'no backend'} ({status.get('exposure', '?')})"


# ---- the whole install --------------------------------------------------------------


def install(
    opts: plan.InstallOptions, layout: Layout, units_src: Path, venv: Path | None = None
) -> plan.Outcome:
    opts = plan.validate(opts)
    try:
        preflight(opts, layout, units_src)
        reg = existing_registration(layout)
        registered_now = reg is None
        if reg is None:
            say(f"exchanging the install token at {opts.control_plane}")
            reg = register(opts)
    except StepError as exc:
        raise EarlyStop(str(exc)) from exc
    if not registered_now:
        say(f"already registered as instance {reg.instance_id}; keeping that credential")
    say("creating users berth, berth-svc and group berth; /run/berth; /var/lib/berth")
    install_accounts_and_dirs(layout, units_src)
    event_id = store_registration(layout, reg)
    env_text = plan.render_agent_env(plan.agent_args(opts, layout))
    install_units(layout, units_src, env_text)
    states = switch_or_start(layout, venv)
    say("waiting for the control plane to accept the first heartbeat")
    wait_acknowledged(layout, event_id, opts.wait_s, "the first heartbeat to be accepted")
    doc = desired_state(layout, opts.wait_s)
    stack_mode = doc.get("security_mode") if doc else None
    proxy_port = (doc.get("proxy") or {}).get("port") if doc else None
    mode, reason = plan.choose_mode(opts.security_mode, stack_mode)
    say(f"security mode {mode}: {reason}")
    fw = apply_security_mode(opts, layout, mode, proxy_port)
    # the .path unit rewires on every later change; this covers names served before it watched
    system.systemctl("start", "berth-dns-wiring.service", check=False)
    dns_mode = wiring.decide_mode(
        AgentSettings(
            state_dir=layout.state_dir, run_dir=layout.run_dir, dns_wiring=opts.dns_wiring
        )
    )
    return plan.Outcome(
        instance_id=reg.instance_id,
        stack_id=reg.stack_id,
        registered_now=registered_now,
        units=states,
        mode=mode,
        mode_reason=reason,
        firewall=fw,
        proxy_port=proxy_port,
        dns_wiring=dns_mode,
    )
