"""The SQS receiver's backoff: how long it waits after failures in a row."""

from __future__ import annotations

from hopper.watch.s3.sqs import Backoff


def test_each_failure_in_a_row_doubles_the_wait_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=30.0)
    assert [backoff.failed() for _ in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_success_starts_the_schedule_over() -> None:
    backoff = Backoff()
    backoff.failed()
    backoff.failed()
    backoff.succeeded()
    assert backoff.failed() == 1.0
