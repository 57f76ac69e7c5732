"""The reconciler's decisions for one service, as pure functions returning typed actions.

The worker (`worker.py`) is the driver: it builds a `ServiceView` of what it knows (the
target, the current process and whether it is alive, failures, timers) and executes the
action `next_action` returns. Deploys are a sequence of `Step`s chosen by `deploy_plan`;
when a new release never becomes ready, `recovery_plan` says how to get back to serving.
Probe results go through `after_probe`. Nothing here sleeps, reads a clock or touches a
process, so every scenario is a plain "given this view, expect this action" test.
"""

from dataclasses import dataclass
from enum import Enum

from agent.reconciler.policy import Backoff, failures_after_exit


@dataclass(frozen=True)
class ServiceView:
    now: float  # monotonic seconds, injected
    removed: bool = False
    target_hash: str | None = None
    current_hash: str | None = None  # config of the current process; None: none
    current_alive: bool = False
    current_started_at: float = 0.0  # wall-clock start, for the backoff reset
    wall_now: float = 0.0
    failed_hash: str | None = None  # the target config that failed to deploy
    failed_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None  # a restart is scheduled for then
    running: bool = False  # the worker's state is "running"
    has_health: bool = False
    probe_at: float = 0.0


# --- actions --------------------------------------------------------------------------
@dataclass(frozen=True)
class Retire:
    """The service left the stack: stop it."""


@dataclass(frozen=True)
class Deploy:
    """Bring the target config up (see `deploy_plan`)."""


@dataclass(frozen=True)
class ScheduleRestart:
    """The process exited: restart it after `delay_s`; `failures` in a row so far."""

    delay_s: float
    failures: int


@dataclass(frozen=True)
class Restart:
    """The scheduled restart is due."""


@dataclass(frozen=True)
class Probe:
    """A health check is due."""


@dataclass(frozen=True)
class Idle:
    """Nothing to do before `wait_s` (or an input) wakes the worker."""

    wait_s: float


Action = Retire | Deploy | ScheduleRestart | Restart | Probe | Idle

TICK_S = 0.25


def needs_deploy(v: ServiceView, backoff: Backoff) -> bool:
    if v.target_hash is None or v.current_hash == v.target_hash:
        return False
    if v.failed_hash != v.target_hash:
        return True
    # This config failed before. With an old release serving, keep it (auto-revert) until
    # a new target arrives; with nothing serving, try again after a backoff delay.
    if v.current_hash is not None:
        return False
    return v.now - v.failed_at >= backoff.delay(v.failures)


def next_action(v: ServiceView, backoff: Backoff) -> Action:
    if v.removed:
        return Retire()
    if needs_deploy(v, backoff):
        return Deploy()
    if v.current_hash is not None and v.restart_at is None and not v.current_alive:
        failures = failures_after_exit(v.failures, v.wall_now - v.current_started_at)
        return ScheduleRestart(backoff.delay(failures), failures)
    if v.restart_at is not None:
        if v.now >= v.restart_at:
            return Restart()
        return Idle(min(TICK_S, v.restart_at - v.now))
    if v.running and v.has_health and v.current_hash == v.target_hash and v.now >= v.probe_at:
        return Probe()
    return Idle(TICK_S)


# --- deploys ----------------------------------------------------------------------------
class Step(Enum):
    SYNC = "sync"  # mirror fetch + release checkout
    BUILD = "build"  # unless this release was built with this build key
    PAUSE = "pause"  # proxies hold new requests for the service
    STOP_OLD = "stop_old"
    START_NEW = "start_new"
    AWAIT_READY = "await_ready"  # health check (or open port) until the deploy timeout
    SWAP = "swap"  # publish the route to the new process
    DRAIN_OLD = "drain_old"  # let in-flight requests finish, then stop the old process
    UNPAUSE = "unpause"
    STOP_NEW = "stop_new"
    REVIVE_OLD = "revive_old"  # start the previous release again on its port


def same_port_cutover(fixed_port: int | None, current_port: int | None) -> bool:
    """A fixed port already held by the running release cannot be shared: pause instead."""
    return fixed_port is not None and current_port == fixed_port


def deploy_plan(fixed_port: int | None, current_port: int | None) -> tuple[Step, ...]:
    if same_port_cutover(fixed_port, current_port):
        return (
            Step.SYNC,
            Step.BUILD,
            Step.PAUSE,
            Step.STOP_OLD,
            Step.START_NEW,
            Step.AWAIT_READY,
            Step.UNPAUSE,
        )
    if current_port is None:
        return (Step.SYNC, Step.BUILD, Step.START_NEW, Step.AWAIT_READY, Step.SWAP)
    return (Step.SYNC, Step.BUILD, Step.START_NEW, Step.AWAIT_READY, Step.SWAP, Step.DRAIN_OLD)


def recovery_plan(failed: Step, plan: tuple[Step, ...], old_revivable: bool) -> tuple[Step, ...]:
    """Steps after `failed` went wrong: never leave the service worse than before."""
    if failed in (Step.SYNC, Step.BUILD):
        return ()  # nothing was touched: the old release still serves
    if Step.PAUSE in plan:
        back = (Step.REVIVE_OLD,) if old_revivable else ()
        return (Step.STOP_NEW, *back, Step.UNPAUSE)
    return (Step.STOP_NEW,)


# --- health -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Health:
    status: str = "unknown"  # unknown | healthy | unhealthy | none (no check configured)
    fails: int = 0


@dataclass(frozen=True)
class HealthOutcome:
    health: Health
    event: str | None  # a transition worth an event
    restart: bool  # unhealthy past its retries: restart it


def after_probe(
    h: Health, ok: bool, retries: int, why: str, starting: bool = False
) -> HealthOutcome:
    """`starting`: a (re)started process still in its grace period (start period or deploy
    timeout, until its first success): failures then do not count, or a slow starter would
    be killed before it ever listened."""
    if ok:
        event = "healthy" if h.status != "healthy" else None
        return HealthOutcome(Health("healthy", 0), event, False)
    if starting:
        return HealthOutcome(h, None, False)
    fails = h.fails + 1
    if fails < retries:
        return HealthOutcome(Health(h.status, fails), None, False)
    event = f"unhealthy after {fails} failed checks: {why}" if h.status != "unhealthy" else None
    return HealthOutcome(Health("unhealthy", fails), event, True)
