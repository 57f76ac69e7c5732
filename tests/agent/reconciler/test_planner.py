"""Planner scenarios: given what the worker knows, which action comes next. No processes,
no sleeps: time is a number in the view."""

from agent.reconciler import planner
from agent.reconciler.planner import (
    Deploy,
    Health,
    Idle,
    Probe,
    Restart,
    Retire,
    ScheduleRestart,
    ServiceView,
    Step,
    after_probe,
    deploy_plan,
    next_action,
    recovery_plan,
)
from agent.reconciler.policy import Backoff

NO_JITTER = Backoff(jitter=0)


def view(**kw):
    base = dict(
        now=100.0,
        wall_now=1000.0,
        target_hash="new",
        current_hash="new",
        current_alive=True,
        running=True,
    )
    base.update(kw)
    return ServiceView(**base)


def test_first_target_deploys():
    assert (
        next_action(view(current_hash=None, current_alive=False, running=False), NO_JITTER)
        == Deploy()
    )


def test_changed_config_deploys_while_old_keeps_running():
    assert next_action(view(current_hash="old"), NO_JITTER) == Deploy()


def test_converged_and_alive_idles_until_a_probe_is_due():
    assert next_action(view(), NO_JITTER) == Idle(planner.TICK_S)
    assert next_action(view(has_health=True, probe_at=99.0), NO_JITTER) == Probe()
    assert next_action(view(has_health=True, probe_at=101.0), NO_JITTER) == Idle(planner.TICK_S)


def test_removed_service_retires_first():
    assert next_action(view(removed=True, current_hash="old"), NO_JITTER) == Retire()


def test_failed_config_with_old_release_serving_is_not_retried():
    v = view(current_hash="old", failed_hash="new", failed_at=0.0, failures=1)
    assert next_action(v, NO_JITTER) == Idle(planner.TICK_S)


def test_failed_first_deploy_is_retried_after_backoff():
    v = view(current_hash=None, current_alive=False, running=False, failed_hash="new", failures=3)
    assert next_action(ServiceView(**{**v.__dict__, "failed_at": 97.0}), NO_JITTER) == Idle(
        planner.TICK_S
    )
    assert (
        next_action(ServiceView(**{**v.__dict__, "failed_at": 95.0}), NO_JITTER) == Deploy()
    )  # 4 s delay


def test_a_new_target_after_a_failure_deploys_at_once():
    v = view(current_hash="old", failed_hash="broken", target_hash="fixed")
    assert next_action(v, NO_JITTER) == Deploy()


def test_crash_schedules_restart_with_growing_backoff():
    v = view(current_alive=False, current_started_at=999.0, failures=0)
    assert next_action(v, NO_JITTER) == ScheduleRestart(1.0, 1)
    v = view(current_alive=False, current_started_at=999.0, failures=3)
    assert next_action(v, NO_JITTER) == ScheduleRestart(8.0, 4)
    v = view(current_alive=False, current_started_at=999.0, failures=30)
    assert next_action(v, NO_JITTER) == ScheduleRestart(300.0, 31)


def test_crash_after_a_long_run_resets_the_backoff():
    v = view(current_alive=False, current_started_at=1000.0 - 601, failures=8)
    assert next_action(v, NO_JITTER) == ScheduleRestart(1.0, 1)


def test_scheduled_restart_waits_then_fires():
    assert next_action(view(current_alive=False, restart_at=100.1), NO_JITTER) == Idle(
        0.09999999999999432
    )
    assert next_action(view(current_alive=False, restart_at=99.9), NO_JITTER) == Restart()


def test_deploy_plans():
    assert deploy_plan(None, None) == (
        Step.SYNC,
        Step.BUILD,
        Step.START_NEW,
        Step.AWAIT_READY,
        Step.SWAP,
    )
    assert deploy_plan(None, 40000)[-2:] == (Step.SWAP, Step.DRAIN_OLD)  # side by side, then drain
    assert deploy_plan(5001, None) == (
        Step.SYNC,
        Step.BUILD,
        Step.START_NEW,
        Step.AWAIT_READY,
        Step.SWAP,
    )
    fixed = deploy_plan(5001, 5001)
    assert fixed == (
        Step.SYNC,
        Step.BUILD,
        Step.PAUSE,
        Step.STOP_OLD,
        Step.START_NEW,
        Step.AWAIT_READY,
        Step.UNPAUSE,
    )
    # a fixed port that changes needs no pause: the new port is free
    assert Step.PAUSE not in deploy_plan(5002, 5001)


def test_recovery_never_leaves_the_service_worse():
    side_by_side = deploy_plan(None, 40000)
    assert recovery_plan(Step.BUILD, side_by_side, True) == ()
    assert recovery_plan(Step.AWAIT_READY, side_by_side, True) == (Step.STOP_NEW,)
    fixed = deploy_plan(5001, 5001)
    assert recovery_plan(Step.AWAIT_READY, fixed, True) == (
        Step.STOP_NEW,
        Step.REVIVE_OLD,
        Step.UNPAUSE,
    )
    assert recovery_plan(Step.AWAIT_READY, fixed, False) == (Step.STOP_NEW, Step.UNPAUSE)
    assert recovery_plan(Step.SYNC, fixed, True) == ()


def test_health_transitions():
    h = Health("healthy")
    out = after_probe(h, False, 3, "HTTP 500")
    assert out.health == Health("healthy", 1) and out.event is None and not out.restart
    out = after_probe(Health("healthy", 2), False, 3, "HTTP 500")
    assert out.health.status == "unhealthy" and out.restart
    assert out.event == "unhealthy after 3 failed checks: HTTP 500"
    out = after_probe(Health("unhealthy", 3), False, 3, "HTTP 500")
    assert out.event is None and out.restart  # no repeated event
    out = after_probe(Health("unhealthy", 3), True, 3, "HTTP 200")
    assert out.health == Health("healthy", 0) and out.event == "healthy"


def test_failed_probes_of_a_starting_process_do_not_count():
    out = after_probe(Health("unhealthy", 5), False, 3, "connection refused", starting=True)
    assert out == planner.HealthOutcome(Health("unhealthy", 5), None, False)
    assert after_probe(Health("unhealthy", 5), True, 3, "HTTP 200", starting=True).health == Health(
        "healthy", 0
    )
