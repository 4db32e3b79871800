"""run_together: results in slot order, a thread's exception re-raised, a stuck thread reported, real overlap;
wait_for: the condition's own value back, or TimedOut naming what was awaited.

No test sleeps: every wait is on a barrier or an event, bounded, and released by the test itself.
"""

import threading

import pytest

from course_lib.concurrency import StillRunning, TimedOut, run_together, wait_for


def threads_named(what: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(f"{what} #")]


def test_results_come_back_in_slot_order():
    assert run_together(lambda slot: slot * slot, 6, timeout=30, what="squares") == [0, 1, 4, 9, 16, 25]


def test_the_first_exception_a_thread_raised_is_reraised():
    def work(slot: int) -> None:
        if slot == 0:
            raise ValueError("slot 0 failed first")
        for first in threads_named("failing"):
            if first.name == "failing #0":
                first.join(timeout=30)  # the others fail only after slot 0's thread has ended
        raise KeyError(slot)

    with pytest.raises(ValueError, match="slot 0 failed first"):
        run_together(work, 4, timeout=30, what="failing")


def test_a_thread_still_running_at_the_deadline_is_reported_with_the_bound():
    release = threading.Event()

    def work(slot: int) -> None:
        if slot == 1:
            release.wait(timeout=60)  # stuck until the test lets it go

    try:
        with pytest.raises(StillRunning, match=r"^stuck: 1 of 3 threads did not finish within 0\.2 s$") as stuck:
            run_together(work, 3, timeout=0.2, what="stuck")
        assert isinstance(stuck.value, TimedOut)  # one `except TimedOut` catches every bounded wait
        still_running = [thread for thread in threads_named("stuck") if thread.is_alive()]
        assert [thread.daemon for thread in still_running] == [True]  # it cannot keep the interpreter alive
    finally:
        release.set()
        for thread in threads_named("stuck"):
            thread.join(timeout=30)  # nothing is left running after the test


def test_the_threads_are_released_together_and_overlap():
    n = 6
    inside = threading.Barrier(n)

    def work(slot: int) -> int:
        started = len(threads_named("overlap"))  # all n, if none began before the last one started
        inside.wait(timeout=30)  # breaks (and fails the test) unless all n are inside `work` at once
        return started

    assert run_together(work, n, timeout=60, what="overlap") == [n] * n


def test_wait_for_returns_the_first_truthy_value_of_the_condition():
    answers = iter([None, 0, "", {"role": "master"}, "never asked"])
    assert wait_for(lambda: next(answers), timeout=5, what="a truthy answer") == {"role": "master"}
    assert next(answers) == "never asked"  # it stopped polling at the first truthy answer


def test_wait_for_raises_timed_out_naming_what_it_waited_for():
    polls = []
    with pytest.raises(TimedOut, match=r"^Timed out after 0\.05 s waiting for the replica to catch up\.$") as late:
        wait_for(lambda: polls.append(1), timeout=0.05, what="the replica to catch up")
    assert isinstance(late.value, TimeoutError)  # what callers outside the course already catch
    assert len(polls) > 1  # it kept asking until the deadline
