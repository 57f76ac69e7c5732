"""`berth installer remove [--purge]`: the root half of uninstall.sh.

Undo in the reverse order of `installer.setup`, each step tolerant of a half-done
install (everything is checked before it is removed, so running it twice is safe):

1. stop the user's services (the reconciler's KillMode=process leaves them running on
   purpose, so they are stopped by pid + start time from its SQLite);
2. `berth firewall revert --to baseline`: the firewall exactly as before Berth;
3. stop and disable every unit, revert the DNS wiring exactly (`revert_wiring`: the
   hosts block and/or the resolved drop-in, only if it is ours);
4. remove unit files, /etc/berth, the tmpfiles and sysusers entries, /run/berth, the
   users `berth` and `berth-svc` and the group `berth`;
5. `--purge` also removes the data: /var/lib/berth* (releases, SQLite, caches).

The venv under /opt/berth is removed by uninstall.sh after this returns (it runs from it).
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

from agent.settings import AgentSettings
from installer import plan, system
from installer.layout import (
    AGENT_GROUP,
    AGENT_UNITS,
    CONTROLPLANE_UNIT,
    FIREWALL_GROUP,
    HELPER_UNITS,
    STATIC_USERS,
    TARGET,
    Layout,
)
from installer.system import StepError

log = logging.getLogger("installer")


def say(message: str) -> None:
    print(f"berth-uninstall: {message}", file=sys.stderr, flush=True)


def _settings(layout: Layout) -> AgentSettings:
    args = plan.parse_agent_env(layout.agent_env.read_text()) if layout.agent_env.exists() else []
    hosts = (
        Path(args[args.index("--hosts-file") + 1]) if "--hosts-file" in args else Path("/etc/hosts")
    )
    return AgentSettings(state_dir=layout.state_dir, run_dir=layout.run_dir, hosts_file=hosts)


def stop_services(layout: Layout) -> int:
    if not layout.store.exists():
        return 0
    from agent.reconciler.admin import stop_recorded_services

    return stop_recorded_services(_settings(layout))


def revert_firewall(layout: Layout) -> str:
    if not layout.firewall_state.exists():
        return "nothing to revert"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "firewall", "revert", "--to", "baseline",
         "--state-dir", str(layout.firewall_state), "--run-dir", str(layout.run_dir),
         "--in-process"],  # the helper's own state if it is dead: the units stop next
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        raise StepError(
            "firewall revert --to baseline failed; the units are left in place so you can "
            f"retry: {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return "reverted to baseline"


def remove(layout: Layout, purge: bool) -> list[str]:
    """Uninstall; return what was done, for the summary."""
    if os.geteuid() != 0:
        raise StepError("run as root (sudo sh -s -- ...)")
    done = []
    # the reconciler first (its KillMode=process leaves the services running): while it
    # runs it would restart each service stop_services ends; the helper stays up for the
    # firewall revert below
    reconciler = "berth-reconciler.service"
    if system.systemd_is_init() and (layout.unit_dir / reconciler).exists():
        system.systemctl("stop", reconciler, check=False)
    stopped = stop_services(layout)
    done.append(f"stopped {stopped} service process(es)")
    done.append("firewall: " + revert_firewall(layout))
    units = [TARGET, *AGENT_UNITS, *HELPER_UNITS]
    if system.systemd_is_init():
        present = [u for u in units if (layout.unit_dir / u).exists()]
        if present:
            system.systemctl("disable", "--now", "--quiet", *present, check=False)
            system.systemctl("stop", *present, check=False)
            done.append("stopped and disabled " + ", ".join(present))
    settings = _settings(layout)
    from agent.resolverwiring import revert_wiring

    reverted = revert_wiring(settings)
    done.append("DNS wiring: " + (", ".join(reverted) or "nothing to revert"))
    removed = [u for u in units if system.remove_path(layout.unit_dir / u)]
    if system.systemd_is_init():
        system.systemctl("daemon-reload", check=False)
        system.systemctl("reset-failed", *units, check=False)
    paths = [layout.sysusers, layout.tmpfiles, layout.run_dir]
    if not (layout.unit_dir / CONTROLPLANE_UNIT).exists():
        paths.append(layout.config_dir)
    else:
        paths.append(layout.agent_env)  # the control plane's config stays with its unit
    if purge:
        paths += layout.data_dirs()
    else:
        paths.append(layout.firewall_state)  # its undo record is spent: the revert is done
    removed += [str(p) for p in paths if system.remove_path(p)]
    done.append("removed " + (", ".join(removed) or "nothing"))
    users = [u for u in STATIC_USERS if system.remove_user(u)]
    for group in (AGENT_GROUP, FIREWALL_GROUP):
        if system.remove_group(group):
            users.append(f"group {group}")
    done.append("users: " + (", ".join(users) or "none left"))
    if not purge and layout.state_dir.exists():
        done.append(f"kept the data in {layout.state_dir} (--purge removes it)")
    return done
