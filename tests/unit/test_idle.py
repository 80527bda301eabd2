"""The pause of Ray Data's scheduling loop: after a step that waited on nothing, never after one
that waited on a task."""

from __future__ import annotations

from dnr.data import idle


class Clock:
    """perf_counter and sleep of a clock that moves only when told to (or slept on)."""

    def __init__(self):
        self.now, self.slept = 100.0, []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_step_right_after_another_pauses_and_one_after_a_wait_does_not(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(idle, "time", clock)
    backoff = idle.IdleBackoff()
    backoff.on_execution_step(None)  # the first step has nothing to compare with
    clock.now += 0.001  # returned at once: a spinning loop
    backoff.on_execution_step(None)
    assert clock.slept == [idle.PAUSE_S]

    clock.now += 0.1  # a step that blocked in ray.wait (up to 0.1 s)
    backoff.on_execution_step(None)
    clock.now += idle.QUICK_S * 1.5
    backoff.on_execution_step(None)
    assert clock.slept == [idle.PAUSE_S]


def test_install_adds_the_callback_once_and_keeps_the_others():
    from ray.data import DataContext
    from ray.data._internal.execution.execution_callback import ExecutionCallback

    class Other(ExecutionCallback):
        pass

    context = DataContext()
    context.custom_execution_callback_classes = [Other]
    idle.install(context)
    idle.install(context)
    assert context.custom_execution_callback_classes == [Other, idle.IdleBackoff]
    assert idle.IdleBackoff in context.execution_callback_classes  # what the planner instantiates
