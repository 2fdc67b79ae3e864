"""When the warm worker polls its pool: on Prefect's word, when a slot frees, else slowly.

Every poll of a work pool costs the Prefect server 20–40 ms of CPU (the pool, its queues,
their free slots, the deployments marked ready), whether or not a run waits. Polling every
half second, as the latency goal once needed, was about a sixth of the server's work in a
burst and most of it when idle. A run is now taken at once for the reasons a run can become
takeable:

- Prefect's event stream announces a run of the pool (``prefect.flow-run.Scheduled``),
  unless every slot of the worker is taken;
- one of the worker's own runs ends, if the last poll left runs behind for want of a slot
  (or was skipped for it);
- and, as the safety net for what the stream missed, the regular poll: every
  :data:`QUIET_POLL_SECONDS` while the stream is up, every poll interval while it is down.

:class:`Wake` is the pure part (when the regular poll is due); :func:`poll_when_scheduled`
listens to the stream and polls when asked. Requests that arrive while a poll runs fold into
one more poll.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

log = logging.getLogger(__name__)

RESUBSCRIBE_SECONDS = 5.0  # wait before subscribing again to a lost event stream
QUIET_POLL_SECONDS = 5.0  # the regular poll while the event stream is up
SCHEDULED = "prefect.flow-run.Scheduled"


def names_pool(event: Any, pool: str) -> bool:
    """Whether a Prefect event names ``pool`` as its run's work pool."""
    return any(
        r.get("prefect.resource.role") == "work-pool" and r.get("prefect.resource.name") == pool
        for r in event.related
    )


class Wake:
    """Requests for a poll now, and whether the regular poll is due.

    Args:
        quiet_seconds: the regular poll's interval while the event stream is up.
        clock: monotonic seconds (a parameter for tests).
    """

    def __init__(
        self,
        quiet_seconds: float = QUIET_POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet_seconds = quiet_seconds
        self.stream_up = False
        self.runs_waiting = False  # the last poll left runs for want of a free slot
        self._clock = clock
        self._last_poll = float("-inf")
        self._send, self.requests = anyio.create_memory_object_stream[None](1)

    def request(self) -> None:
        """Ask for a poll now (from the worker's event loop); one already due covers it."""
        with contextlib.suppress(anyio.WouldBlock):
            self._send.send_nowait(None)

    def slot_freed(self) -> None:
        """One of the worker's runs ended: poll now if runs were left waiting for a slot."""
        if self.runs_waiting:
            self.request()

    def polled(self) -> None:
        """Note that the pool was just polled."""
        self._last_poll = self._clock()

    def regular_poll_due(self) -> bool:
        """Whether the regular poll should reach the server: always while the stream is down."""
        return not self.stream_up or self._clock() - self._last_poll >= self.quiet_seconds


async def poll_when_scheduled(
    pool: str, poll_pool: Callable[[], Awaitable[Any]], wake: Wake
) -> None:
    """Call ``poll_pool`` when Prefect announces a run of ``pool`` or ``wake`` is asked.

    Runs until cancelled. While the stream is lost (the server restarting, say),
    ``wake.stream_up`` is False and the regular poll keeps its own interval.
    """
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    async def poll() -> None:
        async for _ in wake.requests:
            try:
                await poll_pool()
            except Exception as exc:  # the regular poll carries on regardless
                log.debug("polling %s when asked failed: %r", pool, exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(poll)
        names = EventFilter(event=EventNameFilter(name=[SCHEDULED]))
        quiet = False  # said once per outage that the stream is gone
        while True:
            try:
                async with get_events_subscriber(filter=names) as subscriber:
                    wake.stream_up, quiet = True, False
                    wake.request()  # what was scheduled while the stream was away
                    async for event in subscriber:
                        if names_pool(event, pool):
                            wake.request()
            except Exception as exc:  # the server away: poll on the clock until it is back
                if not quiet:
                    log.info("no event stream from Prefect (%r); polling on the clock", exc)
                quiet = True
            wake.stream_up = False
            await anyio.sleep(RESUBSCRIBE_SECONDS)
