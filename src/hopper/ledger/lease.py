"""A flow run's lease on the versions it claimed, renewed by a background thread."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from hopper.errors import TransientError

log = logging.getLogger(__name__)


class Renewer(Protocol):
    """What a lease needs from the ledger (a :class:`~hopper.ledger.Ledger`)."""

    def renew(self, flow_run_id: str) -> int: ...


class Lease:
    """A flow run's hold on the versions it claimed, renewed in a background thread.

    Use it around the work of a run: ``with Lease(ledger, run_id, seconds): ...``. The lease
    is renewed every quarter of ``seconds``; when the process dies, renewals stop and the
    watchers (and reconciliation) take the versions back once ``seconds`` have passed.
    """

    def __init__(self, ledger: Renewer, flow_run_id: str, seconds: float) -> None:
        self.ledger = ledger
        self.flow_run_id = flow_run_id
        self.every = max(seconds / 4, 0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="hopper-lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.ledger.renew(self.flow_run_id)
            except TransientError as exc:  # the next beat tries again
                log.warning("could not renew the lease of run %s: %s", self.flow_run_id, exc)
