"""The timing helpers: take_turns keeps each operation's quickest turn, after untimed warm-up calls."""

import pytest

from course_lib.measure import percentile, take_turns

pytestmark = pytest.mark.engine_agnostic


def test_take_turns_keeps_each_operations_quickest_turn_and_alternates():
    order = []

    def operation(name, slow_turns):
        def run():
            order.append(name)
            turn = order.count(name)  # warm-up call included
            sum(range(200_000 if turn in slow_turns else 1_000))  # a slow turn stands in for a noisy neighbour
        return run

    quickest = take_turns({"a": operation("a", {2, 3}), "b": operation("b", {4})}, rounds=3, warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]  # warm-up each, then turns in alternation
    assert set(quickest) == {"a", "b"} and all(0 < seconds < 0.01 for seconds in quickest.values())


def test_percentile_by_nearest_rank():
    assert percentile([3, 1, 2, 4], 50) == 2 and percentile([3, 1, 2, 4], 100) == 4
    with pytest.raises(ValueError):
        percentile([], 50)
