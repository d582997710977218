"""A periodic task's failure is logged, though the worker waits for no run."""

import logging

import pytest

from app.periodic import PeriodicTask


def test_a_failing_run_is_logged_and_kept(caplog):
    def fail() -> None:
        raise OverflowError("date value out of range")  # what retention met (found by fuzzing)

    task = PeriodicTask(fail, 60.0, clock=lambda: 0.0, thread_name="retention")
    with caplog.at_level(logging.ERROR, logger="app.periodic"):
        task.tick()
        with pytest.raises(OverflowError):
            task.wait()
        task.close()
    [record] = [r for r in caplog.records if r.name == "app.periodic"]
    assert record.getMessage() == "retention failed, will run again in 60 s"
    assert record.exc_info[0] is OverflowError
