"""The reconciler's decisions for one service, as pure functions returning typed actions.

The worker (`worker.py`) is the driver: it builds a `ServiceView` of what it knows (the
target, the current process and whether it is alive, failures, timers) and executes the
action `next_action` returns. Deploys are a sequence of `Step`s chosen by `deploy_plan`;
when a new release never becomes ready, `recovery_plan` says how to get back to serving.
Probe results go through `judge_probe` (keep, or restart after a backoff) and a restart
takes the target `restart_target` picks. The worker's state moves only along
`TRANSITIONS`. Nothing here sleeps, reads a clock or touches a process, so every scenario
is a plain "given this view, expect this action" test.
"""

from dataclasses import dataclass
from enum import Enum, StrEnum

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


# --- the worker's state ------------------------------------------------------------------
class WorkerState(StrEnum):
    PENDING = "pending"  # nothing deployed yet
    BUILDING = "building"  # first deploy: sync and build
    STARTING = "starting"  # first deploy: the new process is starting
    DEPLOYING = "deploying"  # a new release is on its way while the old one serves
    RUNNING = "running"
    BACKOFF = "backoff"  # exited or unhealthy: restarting after a delay
    FAILED = "failed"  # the deploy failed and nothing serves
    STOPPED = "stopped"  # removed from the stack


_S = WorkerState
# every move a worker makes (besides staying put); anything else is a bug and raises
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    _S.PENDING: frozenset({_S.BUILDING, _S.RUNNING, _S.STOPPED}),  # running: adopted
    _S.BUILDING: frozenset({_S.STARTING, _S.PENDING, _S.RUNNING, _S.FAILED, _S.STOPPED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.FAILED, _S.STOPPED}),
    _S.DEPLOYING: frozenset({_S.RUNNING, _S.FAILED, _S.STOPPED}),
    _S.RUNNING: frozenset({_S.BUILDING, _S.DEPLOYING, _S.BACKOFF, _S.STOPPED}),
    _S.BACKOFF: frozenset({_S.RUNNING, _S.BUILDING, _S.DEPLOYING, _S.STOPPED}),
    _S.FAILED: frozenset({_S.BUILDING, _S.STOPPED}),
    _S.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A worker tried a state change `TRANSITIONS` does not allow."""


def transition(current: WorkerState, new: WorkerState) -> WorkerState:
    if new != current and new not in TRANSITIONS[current]:
        raise IllegalTransition(f"worker state {current} cannot become {new}")
    return new


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


@dataclass(frozen=True)
class ProbeVerdict:
    health: Health
    event: str | None  # a transition worth an event
    failures: int  # in a row, counting this one if it means a restart
    restart_in_s: float | None  # stop it now and restart after this long; None: keep it


def judge_probe(
    h: Health, ok: bool, retries: int, why: str, *, starting: bool, failures: int,
    backoff: Backoff,
) -> ProbeVerdict:  # fmt: skip
    """A probe's result: the new health, and whether (and when) to restart the process."""
    outcome = after_probe(h, ok, retries, why, starting=starting)
    if not outcome.restart:
        return ProbeVerdict(outcome.health, outcome.event, failures, None)
    return ProbeVerdict(outcome.health, outcome.event, failures + 1, backoff.delay(failures + 1))


# --- restarts ---------------------------------------------------------------------------
def restart_with_own_target(own_hash: str | None, running_hash: str) -> bool:
    """Restart a process with the target it was started for, if it knows it and still
    runs that config; otherwise (adopted after a reconciler restart: it ran the current
    target) with the current target."""
    return own_hash is not None and own_hash == running_hash


@dataclass(frozen=True)
class RestartTimers:
    probe_at: float  # the first health check
    grace_until: float  # failed checks before this do not count (`after_probe`, starting)


def restart_timers(now: float, start_period_s: float, deploy_s: float) -> RestartTimers:
    return RestartTimers(now + start_period_s, now + max(start_period_s, deploy_s))
